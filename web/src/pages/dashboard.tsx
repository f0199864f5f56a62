/**
 * The freelancer's dashboard (operator token entered once, kept in sessionStorage): every
 * channel, payments arriving live over Server-Sent Events, task requests, one `claimMany` for
 * the selected channels with its gas estimate first, close by payee, watchtower state, CSV.
 */
import { render } from "preact";
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { type Address, type Hex, formatEther } from "viem";
import { toCsv } from "../app/csv.ts";
import { serviceUrl } from "../app/config.ts";
import { Addr, Amount, Notice, TxList, useTxs } from "../app/ui.tsx";
import { WalletBar, useWallet } from "../app/useWallet.tsx";
import {
  type Claim,
  type ServiceChannel,
  type ServiceInfo,
  PieceworkClient,
  ProblemError,
  claimMany,
  closeByPayee,
  estimateClaimMany,
  formatAmount,
  parseAmount,
  plainMessage,
  InputError,
} from "../sdk/index.ts";

const TOKEN_KEY = "piecework-operator-token";
const service = serviceUrl();

type Payment = { channelId: string; taskId: string; amount: bigint; cumulative: bigint; at: number };
type Watchtower = {
  closing: { channel_id: string; closes_at: number; defended: boolean; tx_hash: string | null }[];
  defences: { channel_id: string; tx_hash: string; at: number }[];
  warnings: { kind: string; message: string }[];
  wallet: { address: Address; balance: string; needed: string } | null;
};

function App() {
  const [token, setToken] = useState<string | null>(() => sessionStorage.getItem(TOKEN_KEY));
  const api = useMemo(() => (token ? new PieceworkClient({ baseUrl: service, operatorToken: token }) : null), [token]);
  return (
    <main>
      <header>
        <h1>Freelancer dashboard</h1>
        <p class="sub">
          Your channels, payments as they arrive, claims and closes. Service: <code>{service}</code>
        </p>
      </header>
      {api ? (
        <Dashboard
          api={api}
          onSignOut={() => {
            sessionStorage.removeItem(TOKEN_KEY);
            setToken(null);
          }}
        />
      ) : (
        <TokenForm
          onToken={(t) => {
            sessionStorage.setItem(TOKEN_KEY, t);
            setToken(t);
          }}
        />
      )}
    </main>
  );
}

function TokenForm(props: { onToken: (token: string) => void }) {
  const [value, setValue] = useState("");
  return (
    <section aria-labelledby="token-title">
      <h2 id="token-title">Operator token</h2>
      <p>Enter the service's operator token (PIECEWORK_OPERATOR_TOKEN). It stays in this tab only and is sent only to the service.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          if (value.trim()) props.onToken(value.trim());
        }}
      >
        <label>
          Operator token
          <input type="password" name="operator-token" autoComplete="off" value={value} onInput={(e) => setValue(e.currentTarget.value)} required />
        </label>
        <button type="submit">Open the dashboard</button>
      </form>
    </section>
  );
}

function Dashboard(props: { api: PieceworkClient; onSignOut: () => void }) {
  const { api } = props;
  const [info, setInfo] = useState<ServiceInfo | null>(null);
  const [channels, setChannels] = useState<ServiceChannel[]>([]);
  const [payments, setPayments] = useState<Payment[]>([]);
  const [watchtower, setWatchtower] = useState<Watchtower | null>(null);
  const [live, setLive] = useState<"connecting" | "live" | "reconnecting" | "unavailable">("connecting");
  // An action's error stays until the next action; reloading the list (after every action and
  // event) only replaces its own error, so a rejected request's message is not wiped at once.
  const [error, setError] = useState<string | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [estimate, setEstimate] = useState<{ gas: bigint; cost: bigint; ids: string } | null>(null);
  // What our own confirmed claims settled, until the service's watcher has mirrored them.
  const [claimedHere, setClaimedHere] = useState<Map<string, bigint>>(new Map());
  const [txs, track] = useTxs();
  const wallet = useWallet(info?.chainId ?? null);

  const load = useCallback(async () => {
    try {
      const [i, list] = await Promise.all([api.info(), api.operatorChannels()]);
      setInfo(i);
      setChannels(list);
      setLoadError(null);
    } catch (e) {
      if (e instanceof ProblemError && (e.status === 401 || e.status === 403)) props.onSignOut();
      setLoadError(plainMessage(e));
    }
  }, [api]);

  useEffect(() => void load(), [load]);

  // Events can come in bursts (hundreds of payments a second): reload the list at most once a second.
  const reloadSoon = useMemo(() => {
    let timer: number | null = null;
    return () => {
      if (timer !== null) return;
      timer = window.setTimeout(() => {
        timer = null;
        void load();
      }, 1000);
    };
  }, [load]);

  // Live updates: one long-lived SSE response; reconnects with backoff when it drops.
  useEffect(() => {
    const abort = new AbortController();
    let delay = 1000;
    const connect = async () => {
      while (!abort.signal.aborted) {
        try {
          setLive("connecting");
          await api.events((event) => {
            setLive("live");
            delay = 1000;
            const d = event.data as Record<string, unknown>;
            if (event.type === "payment") {
              const p = { channelId: String(d.channel_id), taskId: String(d.task_id), amount: BigInt(String(d.amount)), cumulative: BigInt(String(d.cumulative_amount)), at: Date.now() };
              setPayments((list) => [p, ...list].slice(0, 200));
              setChannels((list) => list.map((c) => (c.channelId === p.channelId.toLowerCase() ? { ...c, latest: { cumulativeAmount: p.cumulative, signature: c.latest?.signature ?? null } } : c)));
              reloadSoon();
            } else if (event.type === "channel" || event.type === "task") {
              reloadSoon();
            } else if (event.type === "snapshot") {
              reloadSoon();
              if (d.watchtower) setWatchtower(d.watchtower as Watchtower);
            } else if (event.type === "watchtower") {
              setWatchtower(d as unknown as Watchtower);
            }
          }, abort.signal);
        } catch (e) {
          if (abort.signal.aborted) return;
          if (e instanceof ProblemError && e.status === 404) {
            setLive("unavailable");
            return;
          }
        }
        setLive("reconnecting");
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 30_000);
      }
    };
    void connect();
    return () => abort.abort();
  }, [api, reloadSoon]);

  const view = channels.map((c) => {
    const mine = claimedHere.get(c.channelId);
    return mine !== undefined && mine > c.claimed ? { ...c, claimed: mine } : c;
  });
  const tokenOf = (address: Address) => info?.tokens.find((t) => t.address.toLowerCase() === address.toLowerCase()) ?? { symbol: "?", decimals: 18 };
  const claimable = view.filter((c) => c.latest?.signature && c.latest.cumulativeAmount > c.claimed && (c.status === "open" || c.status === "closing"));
  const claims: Claim[] = claimable
    .filter((c) => selected.has(c.channelId))
    .map((c) => ({ channelId: c.channelId, cumulativeAmount: c.latest!.cumulativeAmount, payerSignature: c.latest!.signature! }));
  const claimIds = claims.map((c) => c.channelId).join(",");

  const guard = async (f: () => Promise<void>) => {
    setError(null);
    setMessage(null);
    try {
      await f();
    } catch (e) {
      setError(plainMessage(e));
    } finally {
      void load();
    }
  };

  const estimateClaims = () =>
    guard(async () => {
      if (!wallet.reader || !wallet.account || !info) throw new InputError("Connect your wallet on the service's network first.");
      const gas = await estimateClaimMany(wallet.reader, { contract: info.contract, account: wallet.account, claims });
      const price = await wallet.reader.getGasPrice();
      setEstimate({ gas, cost: gas * price, ids: claimIds });
    });

  const sendClaims = () =>
    guard(async () => {
      if (!wallet.reader || !wallet.wallet || !info) throw new InputError("Connect your wallet on the service's network first.");
      await track(`Claim ${claims.length} channel${claims.length === 1 ? "" : "s"} in one transaction`, wallet.reader, () => claimMany(wallet.wallet!, wallet.reader!, { contract: info.contract, claims }));
      const next = new Map(claimedHere);
      for (const claim of claims) {
        const deposit = channels.find((c) => c.channelId === claim.channelId)?.deposit ?? claim.cumulativeAmount;
        next.set(claim.channelId, claim.cumulativeAmount < deposit ? claim.cumulativeAmount : deposit);
      }
      setClaimedHere(next);
      setSelected(new Set());
      setEstimate(null);
      setMessage("Claimed.");
    });

  const close = (c: ServiceChannel) =>
    guard(async () => {
      if (!wallet.reader || !wallet.wallet || !info) throw new InputError("Connect your wallet on the service's network first.");
      if (wallet.account?.toLowerCase() !== c.payee.toLowerCase()) throw new InputError(`Only the freelancer's account ${c.payee} can close by payee; switch accounts in your wallet.`);
      await track("Close by payee", wallet.reader, () =>
        closeByPayee(wallet.wallet!, wallet.reader!, { contract: info.contract, channelId: c.channelId, cumulativeAmount: c.latest?.cumulativeAmount ?? 0n, payerSignature: c.latest?.signature ?? "0x" }),
      );
    });

  const exportCsv = (list: ServiceChannel[]) =>
    guard(async () => {
      const rows: (string | bigint | null)[][] = [];
      for (const c of list) {
        for (const r of await api.operatorReceipts(c.channelId)) {
          const time = r.createdAt === null ? null : new Date(r.createdAt * 1000).toISOString();
          rows.push([c.channelId, time, r.task, r.taskId, r.amount, r.cumulativeAmount, r.signature, r.claimTx]);
        }
      }
      const csv = toCsv(["channel_id", "time", "task_id", "task_hash", "amount", "cumulative_amount", "receipt_signature", "claim_transaction"], rows);
      const url = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = list.length === 1 ? `receipts-${list[0]!.channelId.slice(0, 10)}.csv` : "receipts-all.csv";
      a.click();
      URL.revokeObjectURL(url);
    });

  const nowSeconds = Math.floor(Date.now() / 1000);
  return (
    <>
      <div class="row">
        <span class="live" data-state={live} data-testid="live" role="status">
          Live updates: {live}
        </span>
        <button type="button" onClick={props.onSignOut}>
          Forget the operator token
        </button>
      </div>
      <WalletBar state={wallet} expectedChainId={info?.chainId ?? null} role="freelancer" />
      {error || loadError ? (
        <Notice kind="error" testId="error">
          {error ?? loadError}
        </Notice>
      ) : null}
      {message ? <Notice kind="ok">{message}</Notice> : null}

      <section aria-labelledby="channels-title">
        <h2 id="channels-title">Channels</h2>
        <table class="channels" data-testid="channels">
          <thead>
            <tr>
              <th scope="col">Claim</th>
              <th scope="col">Channel</th>
              <th scope="col">Client</th>
              <th scope="col">Deposit</th>
              <th scope="col">Accepted</th>
              <th scope="col">Claimed</th>
              <th scope="col">Unclaimed</th>
              <th scope="col">Status</th>
              <th scope="col">Actions</th>
            </tr>
          </thead>
          <tbody>
            {view.map((c) => {
              const t = tokenOf(c.token);
              const accepted = c.latest?.cumulativeAmount ?? 0n;
              const canClaim = claimable.includes(c);
              return (
                <tr key={c.channelId} data-channel-id={c.channelId}>
                  <td>
                    <input
                      type="checkbox"
                      aria-label={`select channel ${c.channelId} for claiming`}
                      disabled={!canClaim}
                      checked={selected.has(c.channelId)}
                      onChange={(e) => {
                        const next = new Set(selected);
                        if (e.currentTarget.checked) next.add(c.channelId);
                        else next.delete(c.channelId);
                        setSelected(next);
                        setEstimate(null);
                      }}
                    />
                  </td>
                  <td>
                    <Addr value={c.channelId} label="channel" />
                  </td>
                  <td>
                    <Addr value={c.payer} label="client" />
                  </td>
                  <td>
                    <Amount value={c.deposit} decimals={t.decimals} symbol={t.symbol} />
                  </td>
                  <td data-testid="accepted">
                    <Amount value={accepted} decimals={t.decimals} symbol={t.symbol} />
                  </td>
                  <td>
                    <Amount value={c.claimed} decimals={t.decimals} symbol={t.symbol} />
                  </td>
                  <td>
                    <Amount value={accepted > c.claimed ? accepted - c.claimed : 0n} decimals={t.decimals} symbol={t.symbol} />
                  </td>
                  <td>
                    {c.status}
                    {c.status === "closing" ? <> ({Math.max(0, Number(c.closesAt) - nowSeconds)} s left)</> : null}
                  </td>
                  <td>
                    {c.status === "open" || c.status === "closing" ? (
                      <>
                        <button type="button" onClick={() => void exportCsv([c])}>
                          CSV
                        </button>{" "}
                        <button type="button" onClick={() => void close(c)}>
                          Close by payee
                        </button>
                      </>
                    ) : (
                      <button type="button" onClick={() => void exportCsv([c])}>
                        CSV
                      </button>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
        {channels.length === 0 ? <p>No channel yet.</p> : null}
        <div class="row">
          <button type="button" disabled={claims.length === 0} onClick={() => void estimateClaims()}>
            Estimate gas for claiming {claims.length} selected
          </button>
          {estimate && estimate.ids === claimIds ? (
            <>
              <span data-testid="gas-estimate">
                About {estimate.gas.toString()} gas ≈ {formatEther(estimate.cost)} ETH
              </span>
              <button type="button" onClick={() => void sendClaims()}>
                Claim {claims.length} in one transaction
              </button>
            </>
          ) : null}
          <button type="button" disabled={channels.length === 0} onClick={() => void exportCsv(channels)}>
            Export all receipts (CSV)
          </button>
        </div>
      </section>

      <RequestForm channels={channels.filter((c) => c.status === "open")} tokenOf={tokenOf} onRequest={(id, task) => guard(async () => void (await api.requestTask(id, task), setMessage(`Asked the client to pay "${task.taskId}".`)))} />

      <section aria-labelledby="payments-title">
        <h2 id="payments-title">Payments received</h2>
        <ul aria-live="polite" data-testid="payments">
          {payments.length === 0 ? <li>None since this page was opened.</li> : null}
          {payments.map((p) => {
            const c = channels.find((x) => x.channelId === p.channelId.toLowerCase());
            const t = c ? tokenOf(c.token) : { decimals: 18, symbol: "" };
            return (
              <li key={`${p.channelId}:${p.cumulative}`}>
                {p.taskId}: <Amount value={p.amount} decimals={t.decimals} symbol={t.symbol} /> on <Addr value={p.channelId} label="channel" />
              </li>
            );
          })}
        </ul>
      </section>

      <section aria-labelledby="watchtower-title" data-testid="watchtower">
        <h2 id="watchtower-title">Watchtower</h2>
        {watchtower ? (
          <>
            {watchtower.wallet ? (
              <p data-testid="watchtower-wallet">
                The service's wallet <Addr value={watchtower.wallet.address} label="service wallet" /> holds{" "}
                <Amount value={BigInt(watchtower.wallet.balance)} decimals={18} symbol="ETH" /> for claims and defences (needs about{" "}
                <Amount value={BigInt(watchtower.wallet.needed)} decimals={18} symbol="ETH" />).
              </p>
            ) : null}
            {watchtower.warnings.map((w) => (
              <Notice key={w.kind} kind="warn">
                {w.message}
              </Notice>
            ))}
            <p>
              {watchtower.closing.length} channel(s) closing; {watchtower.defences.length} defence(s) sent.
            </p>
            <ul>
              {watchtower.closing.map((c) => (
                <li key={c.channel_id}>
                  <Addr value={c.channel_id} label="channel" /> closes at {new Date(c.closes_at * 1000).toLocaleString()} — {c.defended ? "defence sent" : "no defence sent"}
                </li>
              ))}
            </ul>
          </>
        ) : (
          <p>Waiting for the service's watchtower report.</p>
        )}
      </section>
      <TxList txs={txs} />
    </>
  );
}

function RequestForm(props: {
  channels: ServiceChannel[];
  tokenOf: (a: Address) => { symbol: string; decimals: number };
  onRequest: (channelId: Hex, task: { taskId: string; amount: bigint; description: string }) => Promise<void>;
}) {
  const [channel, setChannel] = useState("");
  const [taskId, setTaskId] = useState("");
  const [amount, setAmount] = useState("");
  const [description, setDescription] = useState("");
  const [error, setError] = useState<string | null>(null);
  const chosen = props.channels.find((c) => c.channelId === channel) ?? props.channels[0];
  const t = chosen ? props.tokenOf(chosen.token) : null;
  return (
    <section aria-labelledby="request-title">
      <h2 id="request-title">Request payment for a task</h2>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          if (!chosen || !t) return;
          try {
            const value = parseAmount(amount, t.decimals, t.symbol);
            await props.onRequest(chosen.channelId, { taskId: taskId.trim(), amount: value, description });
            setTaskId("");
            setAmount("");
            setDescription("");
          } catch (err) {
            setError(plainMessage(err));
          }
        }}
      >
        {/* A label of its own (not wrapping the select): a wrapping label's name would include
            the selected option's text. */}
        <div class="field">
          <label htmlFor="request-channel">Channel</label>
          <select id="request-channel" name="channel" value={chosen?.channelId} onChange={(e) => setChannel(e.currentTarget.value)}>
            {props.channels.map((c) => (
              <option key={c.channelId} value={c.channelId}>
                {c.channelId.slice(0, 10)}… ({props.tokenOf(c.token).symbol}, client {c.payer.slice(0, 8)}…)
              </option>
            ))}
          </select>
        </div>
        <label>
          Task id
          <input name="task-id" value={taskId} onInput={(e) => setTaskId(e.currentTarget.value)} required maxLength={256} />
        </label>
        <label>
          {t ? `Amount (${t.symbol})` : "Amount"}
          <input name="task-amount" inputMode="decimal" value={amount} onInput={(e) => setAmount(e.currentTarget.value)} required />
        </label>
        <label>
          Description
          <textarea name="description" value={description} onInput={(e) => setDescription(e.currentTarget.value)} maxLength={2000} />
        </label>
        <button type="submit" disabled={!chosen}>
          Request payment
        </button>
        {error ? <Notice kind="error">{error}</Notice> : null}
        {t ? <small>Amounts are in {t.symbol}; {formatAmount(1n, t.decimals)} is the smallest unit.</small> : null}
      </form>
    </section>
  );
}

render(<App />, document.getElementById("app")!);
