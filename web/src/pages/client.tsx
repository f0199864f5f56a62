/**
 * The client page: connect a wallet, open a channel with a voucher signer generated here, then
 * pay the freelancer's tasks with zero wallet prompts; top up, close cooperatively or by the
 * challenge period. State lives in IndexedDB (shared by tabs) and is resynced from /receipts.
 */
import { render } from "preact";
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { type Address, isAddressEqual } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import * as db from "../app/db.ts";
import { serviceUrl } from "../app/config.ts";
import { Addr, Amount, Notice, TxList, useChainClock, useTxs } from "../app/ui.tsx";
import { type WalletState, WalletBar, useWallet } from "../app/useWallet.tsx";
import { addChain } from "../app/wallet.ts";
import {
  type AccessProvider,
  type PayerChannel,
  type Task,
  type TokenInfo,
  InputError,
  PieceworkClient,
  ServiceUnreachableError,
  ZERO_ADDRESS,
  approve,
  balanceOf,
  channelId as computeChannelId,
  closedSplit,
  cooperativeClose,
  createAccess,
  formatAmount,
  getChannel,
  openChannel,
  needsApproval,
  openChannelWithPermit,
  parseAmount,
  pieceworkDomain,
  plainMessage,
  randomSalt,
  settle,
  signVoucher,
  startClose,
  topUp,
} from "../sdk/index.ts";
import { readBackup, writeBackup } from "./client/backup.ts";
import { type Terms, cachedTokenInfo, loadTerms } from "./client/terms.ts";
import { type ChannelView, ChannelCard, OpenForm, SignerPanel } from "./client/views.tsx";

const service = serviceUrl();
const api = new PieceworkClient({ baseUrl: service });

function App() {
  const [terms, setTerms] = useState<Terms | null>(null);
  const [serviceError, setServiceError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  useEffect(() => {
    void loadTerms(api, service).then(({ terms, serviceError }) => {
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
  // Coming back to the tab (from the freelancer's message, say) reloads tasks and balances:
  // new task requests show without pressing Refresh, and without a polling loop.
  useEffect(() => {
    const onVisible = () => document.visibilityState === "visible" && refresh();
    document.addEventListener("visibilitychange", onVisible);
    return () => document.removeEventListener("visibilitychange", onVisible);
  }, [refresh]);

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

  // A channel talks only to the service it was opened through, for its own payee: a link with
  // another ?service= must not receive this channel's Access signatures or vouchers.
  const ownService = (v: ChannelView) => v.record.service === service && isAddressEqual(v.record.payee, terms.payee);

  // Server state: resend a pending voucher, resync receipts, load tasks (one pass per refresh).
  const channelKey = channels.map((c) => `${c.record.channelId}:${c.chain?.status}`).join(",");
  useEffect(() => {
    if (!access || !localSigner || !props.serviceUp) return;
    let stale = false;
    void (async () => {
      for (const v of channels) {
        if (!v.chain || v.chain.status === "closed" || !ownService(v)) continue;
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
        // A token without permit needs its allowance first, shown as its own transaction.
        const approval = { token, owner: account, spender: terms.contract, amount };
        if (token !== ZERO_ADDRESS && !info.permit && (await needsApproval(reader, approval))) {
          await track(`Approve ${formatAmount(amount, info.decimals, { symbol: info.symbol })} for the channel`, reader, () => approve(walletClient, approval));
        }
        const hash = await track(label, reader, async () => {
          if (token !== ZERO_ADDRESS && info.permit) return (await openChannelWithPermit(walletClient, reader, params)).hash;
          return (await openChannel(walletClient, reader, params)).hash;
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
      if (!ownService(v)) throw new InputError(`This channel pays through ${v.record.service}; open the page from there to pay from it.`);
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
      // topUp pulls with transferFrom: an ERC-20 needs an allowance first (there is no topUp with permit).
      const approval = { token: v.record.token, owner: account, spender: terms.contract, amount };
      if (v.record.token !== ZERO_ADDRESS && (await needsApproval(reader, approval))) {
        await track(`Approve ${formatAmount(amount, info.decimals, { symbol: info.symbol })} for the top-up`, reader, () => approve(walletClient, approval));
      }
      await track(`Top up with ${formatAmount(amount, info.decimals, { symbol: info.symbol })}`, reader, () =>
        topUp(walletClient, reader, { contract: terms.contract, channelId: v.record.channelId, token: v.record.token, amount }),
      );
    });

  const closeCooperatively = (v: ChannelView) =>
    guard(async () => {
      if (!localSigner || !access) throw new InputError("This browser has no voucher signer for this channel.");
      if (!ownService(v)) throw new InputError(`This channel pays through ${v.record.service}; open the page from there to close it cooperatively.`);
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
      const text = writeBackup({
        chainId: terms.chainId,
        contract: terms.contract,
        payer: account,
        signer: { address: s.address, privateKey: s.privateKey },
        channels: records.map((r) => ({ channelId: r.channelId, payee: r.payee, token: r.token, salt: r.salt, service: r.service, cumulative: r.cumulative, highestSigned: r.highestSigned })),
      });
      const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `piecework-signer-${s.address.slice(0, 10)}.json`;
      a.click();
      URL.revokeObjectURL(url);
    });

  const importBackup = (file: File) =>
    guard(async () => {
      const backup = readBackup(await file.text(), { chainId: terms.chainId, contract: terms.contract, payer: account });
      const kept = await db.putSignerOnce({ key: db.signerKey(terms.chainId, terms.contract, account), ...backup.signer, createdAt: Date.now() });
      if (!isAddressEqual(kept.address, backup.signer.address)) throw new InputError("This browser already has a different payment key for this account; it was kept.");
      for (const c of backup.channels) {
        if ((await db.getChannel(c.channelId)) === undefined) {
          await db.putChannel({ ...c, chainId: terms.chainId, contract: terms.contract, payer: account, voucherSigner: backup.signer.address, openTx: null, pending: null, createdAt: Date.now() });
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
            serviceUp={props.serviceUp && ownService(v)}
            otherService={ownService(v) ? null : v.record.service}
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


render(<App />, document.getElementById("app")!);
