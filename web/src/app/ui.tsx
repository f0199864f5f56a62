/** Small presentational pieces shared by the three pages. */
import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import type { Hex } from "viem";
import { type Reader, formatAmount, plainMessage, toPieceworkError, waitForTransaction } from "../sdk/index.ts";

export function Amount(props: { value: bigint; decimals: number; symbol: string }) {
  const exact = formatAmount(props.value, props.decimals, { symbol: props.symbol });
  // Short form for large balances; tiny amounts stay exact rather than collapse to "0…".
  const tiny = props.decimals > 6 && (props.value < 0n ? -props.value : props.value) < 10n ** BigInt(props.decimals - 6);
  return (
    <span class="amount" title={exact}>
      {tiny ? exact : formatAmount(props.value, props.decimals, { symbol: props.symbol, maxFractionDigits: 6 })}
    </span>
  );
}

export function Addr(props: { value: string; label?: string }) {
  const v = props.value;
  return (
    <code class="addr" title={v} aria-label={props.label ? `${props.label} ${v}` : v}>
      {v.length > 14 ? `${v.slice(0, 8)}…${v.slice(-6)}` : v}
    </code>
  );
}

export function Notice(props: { kind: "error" | "info" | "warn" | "ok"; children: ComponentChildren; testId?: string }) {
  return (
    <div class={`notice ${props.kind}`} role={props.kind === "error" ? "alert" : "status"} data-testid={props.testId}>
      {props.children}
    </div>
  );
}

export type TxState = { id: number; label: string; hash: Hex | null; status: "waiting for wallet" | "pending" | "confirmed" | "failed"; error: string | null };

let nextTx = 1;

/**
 * Every transaction shown pending -> confirmed -> failed with its hash. `track` runs `send`
 * (which returns the hash once the wallet sent it), waits for the receipt, and rethrows failures
 * after recording them, so callers can stop a multi-step flow.
 */
export function useTxs(): [TxState[], (label: string, reader: Reader, send: () => Promise<Hex>) => Promise<Hex>] {
  const [txs, setTxs] = useState<TxState[]>([]);
  const track = useCallback(async (label: string, reader: Reader, send: () => Promise<Hex>) => {
    const id = nextTx++;
    const set = (patch: Partial<TxState>) => setTxs((list) => list.map((t) => (t.id === id ? { ...t, ...patch } : t)));
    setTxs((list) => [{ id, label, hash: null, status: "waiting for wallet", error: null }, ...list]);
    let hash: Hex | null = null;
    try {
      hash = await send();
      set({ hash, status: "pending" });
      await waitForTransaction(reader, hash);
      set({ status: "confirmed" });
      return hash;
    } catch (error) {
      set({ status: "failed", error: plainMessage(toPieceworkError(error)) });
      throw error;
    }
  }, []);
  return [txs, track];
}

export function TxList(props: { txs: TxState[] }) {
  if (props.txs.length === 0) return null;
  return (
    <section aria-labelledby="txs-title">
      <h2 id="txs-title">Transactions</h2>
      <ul class="txs" data-testid="txs">
        {props.txs.map((t) => (
          <li key={t.id} class={`tx ${t.status.replace(/ /g, "-")}`} data-status={t.status} data-hash={t.hash ?? undefined}>
            <span class="tx-label">{t.label}</span> <span class="tx-status">{t.status}</span>{" "}
            {t.hash ? <Addr value={t.hash} label="transaction" /> : null}
            {t.error ? <span class="tx-error"> — {t.error}</span> : null}
          </li>
        ))}
      </ul>
    </section>
  );
}

/** "in 59 min 58 s" / "passed", from chain time; re-renders every second. */
export function Countdown(props: { until: bigint; chainNow: () => bigint }) {
  const [, tick] = useState(0);
  useEffect(() => {
    const t = window.setInterval(() => tick((n) => n + 1), 1000);
    return () => window.clearInterval(t);
  }, []);
  const left = props.until - props.chainNow();
  if (left <= 0n) return <span data-testid="countdown">challenge period over</span>;
  const s = Number(left);
  const parts = [Math.floor(s / 86400) && `${Math.floor(s / 86400)} d`, Math.floor((s % 86400) / 3600) && `${Math.floor((s % 86400) / 3600)} h`, `${Math.floor((s % 3600) / 60)} min`, `${s % 60} s`].filter(Boolean);
  return <span data-testid="countdown">in {parts.join(" ")}</span>;
}

/** Chain time as an offset from the local clock, re-anchored whenever a block is read. */
export function useChainClock(): [() => bigint, (blockTimestamp: bigint) => void] {
  const [offset, setOffset] = useState(0n);
  const now = useCallback(() => BigInt(Math.floor(Date.now() / 1000)) + offset, [offset]);
  const anchor = useCallback((ts: bigint) => setOffset(ts - BigInt(Math.floor(Date.now() / 1000))), []);
  return [now, anchor];
}
