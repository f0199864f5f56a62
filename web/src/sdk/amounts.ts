/**
 * The one place amounts cross between people and base units. bigint only: token amounts
 * exceed 2^53, and a JavaScript number would silently round them.
 */
import { InputError } from "./errors.ts";

export const MAX_UINT256 = (1n << 256n) - 1n;

/**
 * "1.25" with 6 decimals -> 1250000n. Refuses rather than rounds: more fraction digits than
 * the token has, signs, exponents, separators and empty input are errors in plain words.
 */
export function parseAmount(text: string, decimals: number, symbol = "the token"): bigint {
  checkDecimals(decimals);
  const s = text.trim();
  if (s === "") throw new InputError("Enter an amount.");
  const m = /^(\d*)(?:\.(\d*))?$/.exec(s);
  if (!m || (m[1] === "" && (m[2] ?? "") === "")) {
    throw new InputError(`"${s.slice(0, 40)}" is not an amount; write it like 12.5 (digits and one dot).`);
  }
  const whole = m[1] || "0";
  const fraction = m[2] ?? "";
  if (fraction.length > decimals) {
    throw new InputError(
      decimals === 0
        ? `${symbol} has no fractional units; enter a whole number.`
        : `${symbol} has ${decimals} decimals; ${s} has ${fraction.length}.`,
      { details: { decimals, given: fraction.length } },
    );
  }
  const value = BigInt(whole) * 10n ** BigInt(decimals) + BigInt(fraction.padEnd(decimals, "0") || "0");
  if (value > MAX_UINT256) throw new InputError("The amount is too large.");
  return value;
}

export type FormatOptions = {
  /** Appended after a space, e.g. "ETH". */
  symbol?: string;
  /** Show at most this many fraction digits (rounded toward zero), marking the cut with "…". */
  maxFractionDigits?: number;
  /** Group the whole part by thousands with commas (default true). */
  group?: boolean;
};

/** 1250000n with 6 decimals -> "1.25"; exact unless `maxFractionDigits` cuts it (then "…"). */
export function formatAmount(value: bigint, decimals: number, options: FormatOptions = {}): string {
  checkDecimals(decimals);
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const base = 10n ** BigInt(decimals);
  let whole = (abs / base).toString();
  let fraction = decimals === 0 ? "" : (abs % base).toString().padStart(decimals, "0").replace(/0+$/, "");
  let cut = false;
  if (options.maxFractionDigits !== undefined && fraction.length > options.maxFractionDigits) {
    fraction = fraction.slice(0, options.maxFractionDigits).replace(/0+$/, "");
    cut = true;
  }
  if (options.group !== false) whole = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const number = `${negative ? "-" : ""}${whole}${fraction ? `.${fraction}` : ""}${cut ? "…" : ""}`;
  return options.symbol ? `${number} ${options.symbol}` : number;
}

/** A JSON decimal string (canonical: no sign, no leading zeros) as a uint256 bigint. */
export function parseUint(value: unknown, what: string): bigint {
  if (typeof value !== "string" || !/^(0|[1-9][0-9]{0,77})$/.test(value)) {
    throw new InputError(`${what} must be a decimal string of digits.`, { details: { [what]: value } });
  }
  const n = BigInt(value);
  if (n > MAX_UINT256) throw new InputError(`${what} is above 2^256 - 1.`);
  return n;
}

function checkDecimals(decimals: number): void {
  if (!Number.isInteger(decimals) || decimals < 0 || decimals > 77) {
    throw new InputError(`A token with ${decimals} decimals is not supported.`);
  }
}
