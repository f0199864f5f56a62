/** The client page's presentational parts: signer panel, open form, one channel's card. */
import { useState } from "preact/hooks";
import type { Address } from "viem";
import type * as db from "../../app/db.ts";
import { Addr, Amount, Countdown, Notice } from "../../app/ui.tsx";
import { type OnchainChannel, type Task, type TokenInfo, ZERO_ADDRESS, formatAmount } from "../../sdk/index.ts";

export type ChannelView = {
  record: db.ChannelRecord;
  chain: OnchainChannel | null;
  /** For a closed channel: what each side got (from its ChannelClosed event). */
  split: { payeeTotal: bigint; payerRefund: bigint } | null;
  receipts: db.StoredReceipt[];
  tasks: Task[] | null;
  taskError: string | null;
};

export function SignerPanel(props: { signer: db.SignerRecord | null; onExport: () => void; onImport: (file: File) => void }) {
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

export function OpenForm(props: { tokens: (TokenInfo & { minDeposit: bigint })[]; minPeriod: bigint; onOpen: (token: Address, amount: string, period: string) => Promise<void> }) {
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

export function ChannelCard(props: {
  view: ChannelView;
  token: (TokenInfo & { balance: bigint }) | undefined;
  chainNow: () => bigint;
  hasSigner: boolean;
  serviceUp: boolean;
  /** The service this channel pays through, when it is not the one this page talks to. */
  otherService: string | null;
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
      {props.otherService && c?.status !== "closed" ? <Notice kind="info">Opened through the service {props.otherService}; its tasks and payments are there. Closing on chain works from here.</Notice> : null}
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
