/**
 * The client page: connect a wallet, open a channel with a voucher signer generated here, then
 * pay the freelancer's tasks with zero wallet prompts; top up, close cooperatively or by the
 * challenge period. State lives in IndexedDB (shared by tabs) and is resynced from /receipts.
 */
import { render } from "preact";
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { type Address, type Hex, isAddressEqual } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import * as db from "../app/db.ts";
import { linkTerms, serviceUrl } from "../app/config.ts";
import { Addr, Amount, Countdown, Notice, TxList, useChainClock, useTxs } from "../app/ui.tsx";
import { type WalletState, WalletBar, useWallet } from "../app/useWallet.tsx";
import { addChain } from "../app/wallet.ts";
import {
  type AccessProvider,
  type OnchainChannel,
  type PayerChannel,
  type Reader,
  type Task,
  type TokenInfo,
  ZERO_ADDRESS,
  PieceworkClient,
  ServiceUnreachableError,
  approveAndOpen,
  approveIfNeeded,
  balanceOf,
  channelId as computeChannelId,
  closedSplit,
  cooperativeClose,
  createAccess,
  formatAmount,
  getChannel,
  openChannel,
  openChannelWithPermit,
  parseAmount,
  pieceworkDomain,
  plainMessage,
  randomSalt,
  settle,
  signVoucher,
  startClose,
  tokenInfo,
  topUp,
  InputError,
} from "../sdk/index.ts";

type Terms = {
  chainId: number;
  contract: Address;
  payee: Address;
  minChallengePeriod: bigint;
  tokens: { address: Address; minDeposit: bigint; symbol: string; decimals: number }[];
  rpcUrl: string | null;
  source: "service" | "saved" | "link";
};

const service = serviceUrl();
const api = new PieceworkClient({ baseUrl: service });

async function loadTerms(): Promise<{ terms: Terms | null; serviceError: string | null }> {
  try {
    const info = await api.info();
    const terms: Terms = {
      chainId: info.chainId,
      contract: info.contract,
      payee: info.payees[0]!,
      minChallengePeriod: info.minChallengePeriod,
      tokens: info.tokens.map((t) => ({ address: t.address, minDeposit: t.minDeposit, symbol: t.symbol, decimals: t.decimals })),
      rpcUrl: info.rpcUrl ?? linkTerms()?.rpcUrl ?? null,
      source: "service",
    };
    await db.putMeta(`terms:${service}`, terms);
    return { terms, serviceError: null };
  } catch (error) {
    const message = plainMessage(error);
    const saved = await db.getMeta<Terms>(`terms:${service}`);
    if (saved) return { terms: { ...saved, source: "saved" }, serviceError: message };
    const link = linkTerms();
    if (link?.payee) {
      return {
        terms: {
          chainId: link.chainId,
          contract: link.contract,
          payee: link.payee,
          minChallengePeriod: 3600n,
          tokens: [ZERO_ADDRESS, ...link.tokens].map((address) => ({ address, minDeposit: 1n, symbol: "", decimals: 18 })),
          rpcUrl: link.rpcUrl,
          source: "link",
        },
        serviceError: message,
      };
    }
    return { terms: null, serviceError: message };
  }
}

const tokenCache = new Map<Address, Promise<TokenInfo>>();
/** Token metadata never changes: read it once per page. */
function cachedTokenInfo(reader: Reader, token: Address): Promise<TokenInfo> {
  let hit = tokenCache.get(token);
  if (!hit) {
    hit = tokenInfo(reader, token);
    hit.catch(() => tokenCache.delete(token));
    tokenCache.set(token, hit);
  }
  return hit;
}

type ChannelView = {
  record: db.ChannelRecord;
  chain: OnchainChannel | null;
  /** For a closed channel: what each side got (from its ChannelClosed event). */
  split: { payeeTotal: bigint; payerRefund: bigint } | null;
  receipts: db.StoredReceipt[];
  tasks: Task[] | null;
  taskError: string | null;
};

function App() {
  const [terms, setTerms] = useState<Terms | null>(null);
  const [serviceError, setServiceError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  useEffect(() => {
    void loadTerms().then(({ terms, serviceError }) => {
      setTerms(terms);
      setServiceError(serviceError);
      setLoading(false);
    });
  }, []);
  const wallet = useWallet(terms?.chainId ?? null);
  return (
    <main>
      <header>
        <h1>Pay your freelancer</h1>
        <p class="sub">
          Fund a payment channel once from your wallet; every task after that is paid by a key kept in this browser, with no wallet prompt. Service:{" "}
          <code>{service}</code>
        </p>
      </header>
      {serviceError ? (
        <Notice kind={terms ? "warn" : "error"} testId="service-error">
          {serviceError}{" "}
          {terms
            ? terms.source === "saved"
              ? "Showing the terms saved from the last visit: your channels, receipts and signer are kept in this browser, and you can still close on chain."
              : "Using the channel terms from this link: you can open a channel; payments wait until the service answers."
            : "Without it this page cannot show the freelancer's terms."}
        </Notice>
      ) : null}
      {loading ? <p>Loading the freelancer's terms…</p> : null}
      <WalletBar state={wallet} expectedChainId={terms?.chainId ?? null} role="client" {...(terms?.rpcUrl ? { add: addChain(terms.chainId, terms.rpcUrl) } : {})} />
      {terms ? <Client terms={terms} wallet={wallet} serviceUp={serviceError === null} onServiceError={setServiceError} /> : null}
    </main>
  );
}

function Client(props: { terms: Terms; wallet: WalletState; serviceUp: boolean; onServiceError: (m: string | null) => void }) {
  const { terms, wallet } = props;
  const { reader, wallet: walletClient, account } = wallet;
  const domain = useMemo(() => pieceworkDomain(terms.chainId, terms.contract), [terms]);
  const [tokens, setTokens] = useState<Record<string, TokenInfo & { balance: bigint; minDeposit: bigint; mismatch: boolean }>>({});
  const [signer, setSigner] = useState<db.SignerRecord | null>(null);
  const [channels, setChannels] = useState<ChannelView[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const [txs, track] = useTxs();
  const [chainNow, anchor] = useChainClock();
  const [version, setVersion] = useState(0);
  const refresh = useCallback(() => setVersion((v) => v + 1), []);

  useEffect(() => db.onChange(refresh), [refresh]);

  const localSigner = useMemo(() => (signer ? privateKeyToAccount(signer.privateKey) : null), [signer]);
  const access: AccessProvider | null = useMemo(() => (localSigner ? createAccess({ domain, signer: localSigner }) : null), [domain, localSigner]);

  // Chain state: tokens (metadata from the token itself), balances, signer, channels.
  useEffect(() => {
    if (!reader || !account) return;
    let stale = false;
    void (async () => {
      try {
        const block = await reader.getBlock();
        anchor(block.timestamp);
        const infos: typeof tokens = {};
        for (const t of terms.tokens) {
          const info = await cachedTokenInfo(reader, t.address);
          const mismatch = t.symbol !== "" && t.decimals !== info.decimals;
          infos[t.address] = { ...info, balance: await balanceOf(reader, { token: t.address, owner: account }), minDeposit: t.minDeposit, mismatch };
        }
        const record = (await db.getSigner(db.signerKey(terms.chainId, terms.contract, account))) ?? null;
        const records = await db.channelsOf(terms.chainId, terms.contract, account);
        const views: ChannelView[] = [];
        for (const r of records) {
          const chain = await getChannel(reader, { contract: terms.contract, channelId: r.channelId });
          let split = null;
          if (chain.status === "closed") {
            const opened = r.openTx ? await reader.getTransactionReceipt({ hash: r.openTx }).catch(() => null) : null;
            split = await closedSplit(reader, { contract: terms.contract, channelId: r.channelId, ...(opened ? { fromBlock: opened.blockNumber } : {}) });
          }
          views.push({ record: r, chain: chain.status === "none" ? null : chain, split, receipts: await db.receiptsOf(r.channelId), tasks: null, taskError: null });
        }
        if (stale) return;
        setTokens(infos);
        setSigner(record);
        // Tasks come from the service (effect below); keep the last ones while it reloads them.
        setChannels((previous) => views.map((v) => ({ ...v, tasks: previous.find((p) => p.record.channelId === v.record.channelId)?.tasks ?? null })));
      } catch (e) {
        if (!stale) setError(plainMessage(e));
      }
    })();
    return () => {
      stale = true;
    };
  }, [reader, account, terms, version, anchor]);

  const payerChannel = useCallback(
    (v: ChannelView): PayerChannel => ({ domain, channelId: v.record.channelId, payer: v.record.payer, payee: v.record.payee, voucherSigner: v.record.voucherSigner, deposit: v.chain?.deposit ?? 0n }),
    [domain],
  );

  // Server state: resend a pending voucher, resync receipts, load tasks (one pass per refresh).
  const channelKey = channels.map((c) => `${c.record.channelId}:${c.chain?.status}`).join(",");
  useEffect(() => {
    if (!access || !localSigner || !props.serviceUp) return;
    let stale = false;
    void (async () => {
      for (const v of channels) {
        if (!v.chain || v.chain.status === "closed") continue;
        const id = v.record.channelId;
        try {
          await navigator.locks.request(`piecework-pay-${id}`, async () => {
            const record = (await db.getChannel(id))!;
            const pc = payerChannel({ ...v, record });
            if (record.pending) {
              try {
                const receipt = await api.sendVoucher(pc, record.pending);
                await db.putReceipts([{ ...receipt, key: db.receiptKey(id, receipt.cumulativeAmount), taskLabel: record.pending.taskId, receivedAt: Date.now() }]);
              } catch {
                // Superseded or refused: the resync below decides what was accepted.
              }
            }
            const { receipts, cumulativeAmount } = await api.resync({ channel: pc, access, highestSigned: record.highestSigned });
            const known = new Map((await db.receiptsOf(id)).map((r) => [r.key, r]));
            await db.putReceipts(
              receipts
                .filter((r) => !known.has(db.receiptKey(id, r.cumulativeAmount)))
                .map((r) => ({ ...r, key: db.receiptKey(id, r.cumulativeAmount), taskLabel: null, receivedAt: Date.now() })),
            );
            if (record.cumulative !== cumulativeAmount || record.pending) {
              await db.updateChannel(id, (r) => ({ ...r, cumulative: cumulativeAmount, pending: null, highestSigned: r.highestSigned > cumulativeAmount ? r.highestSigned : cumulativeAmount }));
            }
          });
          const tasks = await api.tasks(payerChannel(v), { access });
          if (stale) return;
          setChannels((list) => list.map((c) => (c.record.channelId === id ? { ...c, tasks, taskError: null } : c)));
        } catch (e) {
          if (stale) return;
          if (e instanceof ServiceUnreachableError) props.onServiceError(e.shortMessage);
          setChannels((list) => list.map((c) => (c.record.channelId === id ? { ...c, taskError: plainMessage(e) } : c)));
        }
      }
    })();
    return () => {
      stale = true;
    };
  }, [channelKey, access, props.serviceUp, version]);

  const guard = useCallback(async (f: () => Promise<void>) => {
    setError(null);
    setMessage(null);
    try {
      await f();
    } catch (e) {
      setError(plainMessage(e));
    } finally {
      refresh();
    }
  }, [refresh]);

  if (!account) return <Notice kind="info">Connect your wallet to see your channels and open a new one.</Notice>;
  if (!reader || !walletClient) return null;

  const ensureSigner = async (): Promise<db.SignerRecord> => {
    const key = db.signerKey(terms.chainId, terms.contract, account);
    const existing = await db.getSigner(key);
    if (existing) return existing;
    const privateKey = generatePrivateKey();
    const kept = await db.putSignerOnce({ key, address: privateKeyToAccount(privateKey).address, privateKey, createdAt: Date.now() });
    setSigner(kept);
    return kept;
  };

  const open = (token: Address, amountText: string, periodText: string) =>
    guard(async () => {
      const info = tokens[token];
      if (!info) throw new InputError("Choose a token.");
      const amount = parseAmount(amountText, info.decimals, info.symbol);
      if (amount < info.minDeposit) throw new InputError(`The freelancer takes at least ${formatAmount(info.minDeposit, info.decimals, { symbol: info.symbol })}.`);
      if (amount > info.balance) throw new InputError(`Your balance is ${formatAmount(info.balance, info.decimals, { symbol: info.symbol })}, less than ${amountText} ${info.symbol}.`);
      if (!/^\d{1,10}$/.test(periodText.trim())) throw new InputError("The challenge period is a whole number of seconds.");
      const period = BigInt(periodText.trim());
      if (period < terms.minChallengePeriod) throw new InputError(`The freelancer requires a challenge period of at least ${terms.minChallengePeriod} seconds.`);
      const s = await ensureSigner();
      const salt = randomSalt();
      const id = computeChannelId({ payer: account, payee: terms.payee, token, salt });
      // Written before the wallet prompt: a reload mid-way still knows the channel and its signer.
      await db.putChannel({
        channelId: id, chainId: terms.chainId, contract: terms.contract, payer: account, payee: terms.payee, token, salt,
        voucherSigner: s.address, openTx: null, cumulative: 0n, highestSigned: 0n, pending: null, service, createdAt: Date.now(),
      });
      const params = { contract: terms.contract, payee: terms.payee, token, amount, challengePeriod: period, voucherSigner: s.address, salt };
      const label = `Open ${info.symbol} channel with ${formatAmount(amount, info.decimals, { symbol: info.symbol })}`;
      try {
        const hash = await track(label, reader, async () => {
          if (token === ZERO_ADDRESS) return (await openChannel(walletClient, reader, params)).hash;
          if (info.permit) return (await openChannelWithPermit(walletClient, reader, params)).hash;
          return (await approveAndOpen(walletClient, reader, params)).hash;
        });
        await db.updateChannel(id, (r) => ({ ...r, openTx: hash }));
        setMessage(`Channel opened. Tasks are now paid from it without wallet prompts.`);
      } catch (e) {
        const onchain = await getChannel(reader, { contract: terms.contract, channelId: id }).catch(() => null);
        if (!onchain || onchain.status === "none") await db.deleteChannel(id);
        throw e;
      }
    });

  const pay = (v: ChannelView, tasks: Task[]) =>
    guard(async () => {
      if (!localSigner || !access) throw new InputError("This browser has no voucher signer for this channel.");
      if (!props.serviceUp) throw new InputError("The freelancer's service is not answering; payments wait until it is back.");
      const id = v.record.channelId;
      await navigator.locks.request(`piecework-pay-${id}`, async () => {
        const record = (await db.getChannel(id))!;
        const { results, error } = await api.payAll({
          channel: payerChannel({ ...v, record }),
          signer: localSigner,
          tasks: tasks.map((t) => ({ taskId: t.taskId, amount: t.amount })),
          previous: record.cumulative,
          highestSigned: record.highestSigned,
          access,
          onVoucher: async (voucher) => {
            await db.updateChannel(id, (r) => ({ ...r, pending: voucher, highestSigned: voucher.cumulativeAmount > r.highestSigned ? voucher.cumulativeAmount : r.highestSigned }));
          },
          onPaid: async (result, taskId) => {
            await db.putReceipts([{ ...result.receipt, key: db.receiptKey(id, result.cumulativeAmount), taskLabel: taskId, receivedAt: Date.now() }]);
            await db.updateChannel(id, (r) => ({ ...r, cumulative: result.cumulativeAmount, pending: null }));
          },
        });
        if (results.length > 0) setMessage(`Paid ${results.length} task${results.length === 1 ? "" : "s"}; every receipt was verified against the freelancer's address.`);
        if (error) throw error;
      });
    });

  const doTopUp = (v: ChannelView, amountText: string) =>
    guard(async () => {
      const info = tokens[v.record.token]!;
      const amount = parseAmount(amountText, info.decimals, info.symbol);
      if (amount <= 0n) throw new InputError("The amount must be more than 0.");
      if (v.record.token !== ZERO_ADDRESS) {
        await track(`Approve ${info.symbol} for the top-up`, reader, async () => {
          let sent: Hex | null = null;
          await approveIfNeeded(walletClient, reader, { token: v.record.token, spender: terms.contract, amount, onSent: (h) => (sent = h) });
          if (sent === null) throw new Skip();
          return sent;
        }).catch((e) => {
          if (!(e instanceof Skip)) throw e;
        });
      }
      await track(`Top up with ${formatAmount(amount, info.decimals, { symbol: info.symbol })}`, reader, () =>
        topUp(walletClient, reader, { contract: terms.contract, channelId: v.record.channelId, token: v.record.token, amount }),
      );
    });

  const closeCooperatively = (v: ChannelView) =>
    guard(async () => {
      if (!localSigner || !access) throw new InputError("This browser has no voucher signer for this channel.");
      const id = v.record.channelId;
      const record = (await db.getChannel(id))!;
      const block = await reader.getBlock();
      const consent = await api.requestClose({ channel: payerChannel({ ...v, record }), signer: localSigner, cumulativeAmount: record.cumulative, access, highestSigned: record.highestSigned, now: block.timestamp });
      const claimed = v.chain?.claimed ?? 0n;
      const payerSignature = consent.cumulativeAmount > claimed ? await signVoucher(localSigner, { domain, channelId: id, cumulativeAmount: consent.cumulativeAmount }) : "0x";
      await track("Close cooperatively", reader, () =>
        cooperativeClose(walletClient, reader, { contract: terms.contract, channelId: id, cumulativeAmount: consent.cumulativeAmount, deadline: consent.deadline, payerSignature, payeeSignature: consent.signature }),
      );
      setMessage("Channel closed: the freelancer got what you paid, the rest came back to you.");
    });

  const exportBackup = () =>
    guard(async () => {
      const s = await ensureSigner();
      const records = await db.channelsOf(terms.chainId, terms.contract, account);
      const backup = {
        type: "piecework-voucher-signer",
        version: 1,
        warning: "Anyone holding this file can sign payments from these channels up to their unclaimed deposits. Keep it private.",
        chainId: terms.chainId,
        contract: terms.contract,
        payer: account,
        address: s.address,
        privateKey: s.privateKey,
        channels: records.map((r) => ({ channelId: r.channelId, payee: r.payee, token: r.token, salt: r.salt, service: r.service, cumulative: r.cumulative.toString(), highestSigned: r.highestSigned.toString() })),
      };
      const url = URL.createObjectURL(new Blob([JSON.stringify(backup, null, 2)], { type: "application/json" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `piecework-signer-${s.address.slice(0, 10)}.json`;
      a.click();
      URL.revokeObjectURL(url);
    });

  const importBackup = (file: File) =>
    guard(async () => {
      let data;
      try {
        data = JSON.parse(await file.text());
      } catch {
        throw new InputError("This file is not a Piecework signer backup (not JSON).");
      }
      if (data?.type !== "piecework-voucher-signer" || data.version !== 1) throw new InputError("This file is not a Piecework signer backup.");
      const key = privateKeyToAccount(data.privateKey as Hex);
      if (data.chainId !== terms.chainId || !isAddressEqual(data.contract, terms.contract) || !isAddressEqual(data.payer, account)) {
        throw new InputError("This backup belongs to another account, network or contract.");
      }
      const kept = await db.putSignerOnce({ key: db.signerKey(terms.chainId, terms.contract, account), address: key.address, privateKey: data.privateKey, createdAt: Date.now() });
      if (!isAddressEqual(kept.address, key.address)) throw new InputError("This browser already has a different signer for this account; it was kept.");
      for (const c of data.channels as { channelId: Hex; payee: Address; token: Address; salt: Hex; service: string; cumulative: string; highestSigned: string }[]) {
        if ((await db.getChannel(c.channelId)) === undefined) {
          await db.putChannel({ channelId: c.channelId, chainId: terms.chainId, contract: terms.contract, payer: account, payee: c.payee, token: c.token, salt: c.salt, voucherSigner: key.address, openTx: null, cumulative: BigInt(c.cumulative), highestSigned: BigInt(c.highestSigned), pending: null, service: c.service, createdAt: Date.now() });
        }
      }
      setSigner(kept);
      setMessage("Backup restored.");
    });

  const tokenList = terms.tokens.map((t) => tokens[t.address]).filter((t): t is NonNullable<typeof t> => t !== undefined);

  return (
    <>
      <section aria-labelledby="freelancer-title">
        <h2 id="freelancer-title">Freelancer</h2>
        <p data-testid="payee">
          Paying <Addr value={terms.payee} label="freelancer" /> through the contract <Addr value={terms.contract} label="contract" /> on network {terms.chainId}.
        </p>
        <table class="balances">
          <caption>Accepted tokens and your balances</caption>
          <thead>
            <tr>
              <th scope="col">Token</th>
              <th scope="col">Your balance</th>
              <th scope="col">Least deposit</th>
            </tr>
          </thead>
          <tbody>
            {tokenList.map((t) => (
              <tr key={t.address} data-testid={`balance-${t.symbol}`}>
                <td>
                  {t.symbol} {t.permit ? <small>(permit)</small> : null}
                  {t.mismatch ? <strong class="warn"> the service states other decimals; the token's own are used</strong> : null}
                </td>
                <td>
                  <Amount value={t.balance} decimals={t.decimals} symbol={t.symbol} />
                </td>
                <td>
                  <Amount value={t.minDeposit} decimals={t.decimals} symbol={t.symbol} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>

      <SignerPanel signer={signer} onExport={exportBackup} onImport={importBackup} />

      <OpenForm tokens={tokenList} minPeriod={terms.minChallengePeriod} onOpen={open} />

      {error ? (
        <Notice kind="error" testId="error">
          {error}
        </Notice>
      ) : null}
      {message ? (
        <Notice kind="ok" testId="message">
          {message}
        </Notice>
      ) : null}

      <section aria-labelledby="channels-title">
        <h2 id="channels-title">Your channels</h2>
        {channels.length === 0 ? <p>No channel yet.</p> : null}
        {channels.map((v) => (
          <ChannelCard
            key={v.record.channelId}
            view={v}
            token={tokens[v.record.token]}
            chainNow={chainNow}
            hasSigner={localSigner !== null && isAddressEqual(localSigner.address, v.record.voucherSigner)}
            serviceUp={props.serviceUp}
            onPay={(tasks) => pay(v, tasks)}
            onTopUp={(amount) => doTopUp(v, amount)}
            onCloseCooperatively={() => closeCooperatively(v)}
            onStartClose={() => guard(async () => void (await track("Start closing", reader, () => startClose(walletClient, reader, { contract: terms.contract, channelId: v.record.channelId }))))}
            onSettle={() => guard(async () => void (await track("Settle", reader, () => settle(walletClient, reader, { contract: terms.contract, channelId: v.record.channelId }))))}
          />
        ))}
        <button type="button" onClick={refresh}>
          Refresh
        </button>
      </section>
      <TxList txs={txs} />
    </>
  );
}

class Skip extends Error {}

function SignerPanel(props: { signer: db.SignerRecord | null; onExport: () => void; onImport: (file: File) => void }) {
  return (
    <section aria-labelledby="signer-title">
      <h2 id="signer-title">Payment key in this browser</h2>
      {props.signer ? (
        <p data-testid="voucher-signer">
          Tasks are paid by the key <Addr value={props.signer.address} label="voucher signer" />, kept only in this browser. It can spend at most what is left unclaimed in your channels. Export a
          backup in case this browser's data is cleared.
        </p>
      ) : (
        <p>A payment key is created in this browser when you open your first channel.</p>
      )}
      <div class="row">
        <button type="button" onClick={props.onExport} disabled={!props.signer}>
          Export backup
        </button>
        <label class="file">
          Restore a backup <input type="file" accept="application/json" onChange={(e) => e.currentTarget.files?.[0] && props.onImport(e.currentTarget.files[0])} />
        </label>
      </div>
    </section>
  );
}

function OpenForm(props: { tokens: (TokenInfo & { minDeposit: bigint })[]; minPeriod: bigint; onOpen: (token: Address, amount: string, period: string) => Promise<void> }) {
  const [token, setToken] = useState<string>("");
  const [amount, setAmount] = useState("");
  const [period, setPeriod] = useState(String(props.minPeriod));
  const [busy, setBusy] = useState(false);
  const chosen = props.tokens.find((t) => t.address === token) ?? props.tokens[0];
  return (
    <section aria-labelledby="open-title">
      <h2 id="open-title">Open a channel</h2>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          if (!chosen) return;
          setBusy(true);
          await props.onOpen(chosen.address, amount, period);
          setBusy(false);
        }}
      >
        <label>
          Token
          <select value={chosen?.address} onChange={(e) => setToken(e.currentTarget.value)} name="token">
            {props.tokens.map((t) => (
              <option key={t.address} value={t.address}>
                {t.symbol}
              </option>
            ))}
          </select>
        </label>
        <label>
          Deposit ({chosen?.symbol})
          <input name="amount" inputMode="decimal" autoComplete="off" value={amount} onInput={(e) => setAmount(e.currentTarget.value)} required />
        </label>
        <label>
          Challenge period (seconds)
          <input name="period" inputMode="numeric" value={period} onInput={(e) => setPeriod(e.currentTarget.value)} required pattern="[0-9]+" />
        </label>
        <button type="submit" disabled={busy || !chosen}>
          {chosen && chosen.address !== ZERO_ADDRESS ? (chosen.permit ? "Open with permit (one transaction)" : "Approve and open (two transactions)") : "Open channel"}
        </button>
      </form>
    </section>
  );
}

function ChannelCard(props: {
  view: ChannelView;
  token: (TokenInfo & { balance: bigint }) | undefined;
  chainNow: () => bigint;
  hasSigner: boolean;
  serviceUp: boolean;
  onPay: (tasks: Task[]) => Promise<void>;
  onTopUp: (amount: string) => Promise<void>;
  onCloseCooperatively: () => Promise<void>;
  onStartClose: () => Promise<void>;
  onSettle: () => Promise<void>;
}) {
  const { view, token } = props;
  const [topUpAmount, setTopUpAmount] = useState("");
  const [busy, setBusy] = useState(false);
  const run = async (f: () => Promise<void>) => {
    setBusy(true);
    try {
      await f();
    } finally {
      setBusy(false);
    }
  };
  const c = view.chain;
  const symbol = token?.symbol ?? "";
  const decimals = token?.decimals ?? 18;
  const requested = (view.tasks ?? []).filter((t) => t.status === "requested");
  const total = requested.reduce((sum, t) => sum + t.amount, 0n);
  const labels = new Map((view.tasks ?? []).map((t) => [t.taskHash, t.taskId]));
  const status = c?.status ?? (view.record.openTx ? "opening" : "not opened");
  const over = c?.status === "closing" && props.chainNow() >= c.closesAt;
  return (
    <article class="channel" data-testid="channel" data-channel-id={view.record.channelId} data-status={status} aria-label={`Channel ${view.record.channelId}`}>
      <h3>
        {symbol} channel <Addr value={view.record.channelId} label="channel id" />
      </h3>
      <ChannelFacts view={view} status={status} decimals={decimals} symbol={symbol} chainNow={props.chainNow} />
      {!props.hasSigner && c?.status === "open" ? <Notice kind="warn">This browser does not hold this channel's payment key; restore your backup to pay from it.</Notice> : null}
      {c?.status === "open" ? (
        <>
          <h4>Tasks requested by the freelancer</h4>
          {view.taskError ? <Notice kind="error">{view.taskError}</Notice> : null}
          {view.tasks === null && !view.taskError ? <p>{props.serviceUp ? "Loading tasks…" : "Tasks appear when the freelancer's service answers."}</p> : null}
          {view.tasks !== null && requested.length === 0 ? <p>No task waiting for payment.</p> : null}
          {requested.length > 0 ? (
            <ul class="tasks" data-testid="tasks">
              {requested.map((t) => (
                <li key={t.taskId} data-task-id={t.taskId}>
                  <span class="desc">{t.description || t.taskId}</span> <small>({t.taskId})</small> <Amount value={t.amount} decimals={decimals} symbol={symbol} />{" "}
                  <button type="button" disabled={busy || !props.hasSigner} onClick={() => run(() => props.onPay([t]))}>
                    Pay
                  </button>
                </li>
              ))}
            </ul>
          ) : null}
          {requested.length > 1 ? (
            <button type="button" disabled={busy || !props.hasSigner} onClick={() => run(() => props.onPay(requested))}>
              Pay all {requested.length} tasks ({formatAmount(total, decimals, { symbol })})
            </button>
          ) : null}
          <form
            class="row"
            onSubmit={(e) => {
              e.preventDefault();
              void run(() => props.onTopUp(topUpAmount));
            }}
          >
            <label>
              Top up ({symbol})
              <input name="topup" inputMode="decimal" value={topUpAmount} onInput={(e) => setTopUpAmount(e.currentTarget.value)} />
            </label>
            <button type="submit" disabled={busy}>
              Top up
            </button>
          </form>
          <div class="row">
            <button type="button" disabled={busy || !props.hasSigner} onClick={() => run(props.onCloseCooperatively)}>
              Close now with the freelancer's consent
            </button>
            <button type="button" disabled={busy} onClick={() => run(props.onStartClose)}>
              Start closing without the freelancer
            </button>
          </div>
        </>
      ) : null}
      {c?.status === "closing" ? (
        <button type="button" disabled={busy || !over} onClick={() => run(props.onSettle)}>
          Settle {over ? "now" : "(after the challenge period)"}
        </button>
      ) : null}
      <details open={view.receipts.length > 0 && view.receipts.length <= 20}>
        <summary>Receipts ({view.receipts.length})</summary>
        <table class="receipts" data-testid="receipts">
          <thead>
            <tr>
              <th scope="col">Task</th>
              <th scope="col">Amount</th>
              <th scope="col">Total paid</th>
              <th scope="col">Freelancer's signature</th>
            </tr>
          </thead>
          <tbody>
            {view.receipts.map((r) => (
              <tr key={r.key}>
                <td>{r.taskLabel ?? labels.get(r.taskId) ?? <Addr value={r.taskId} label="task hash" />}</td>
                <td>
                  <Amount value={r.amount} decimals={decimals} symbol={symbol} />
                </td>
                <td>
                  <Amount value={r.cumulativeAmount} decimals={decimals} symbol={symbol} />
                </td>
                <td>
                  <Addr value={r.signature} label="signature" />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </article>
  );
}

/** The channel's numbers: live ones from getChannel, or a closed channel's final split. */
function ChannelFacts(props: { view: ChannelView; status: string; decimals: number; symbol: string; chainNow: () => bigint }) {
  const { view, status, decimals, symbol } = props;
  const c = view.chain;
  const amount = (value: bigint) => <Amount value={value} decimals={decimals} symbol={symbol} />;
  if (c?.status === "closed") {
    return (
      <dl class="facts">
        <dt>Status</dt>
        <dd data-testid="status">{status}</dd>
        <dt>Paid through receipts</dt>
        <dd data-testid="paid">{amount(view.record.cumulative)}</dd>
        {view.split ? (
          <>
            <dt>The freelancer received</dt>
            <dd data-testid="payee-total">{amount(view.split.payeeTotal)}</dd>
            <dt>Refunded to you</dt>
            <dd data-testid="refund">{amount(view.split.payerRefund)}</dd>
          </>
        ) : null}
      </dl>
    );
  }
  return (
    <dl class="facts">
      <dt>Status</dt>
      <dd data-testid="status">{status}</dd>
      <dt>Deposit</dt>
      <dd data-testid="deposit">{c ? amount(c.deposit) : "—"}</dd>
      <dt>Paid</dt>
      <dd data-testid="paid">{amount(view.record.cumulative)}</dd>
      <dt>Left</dt>
      <dd>{c ? amount(c.deposit - view.record.cumulative) : "—"}</dd>
      <dt>Claimed by the freelancer</dt>
      <dd>{c ? amount(c.claimed) : "—"}</dd>
      {c?.status === "closing" ? (
        <>
          <dt>Settle possible</dt>
          <dd>
            {new Date(Number(c.closesAt) * 1000).toLocaleString()} (<Countdown until={c.closesAt} chainNow={props.chainNow} />)
          </dd>
        </>
      ) : null}
    </dl>
  );
}

render(<App />, document.getElementById("app")!);
