/**
 * Where the page finds its service and chain. By default the service is the page's own origin
 * (served by `piecework serve` at `/`); `?service=https://...` points a page hosted elsewhere at a
 * freelancer's service. `?chain=&contract=&payee=&token=` give the channel terms directly (a
 * freelancer's link), used when the service cannot be reached.
 */
import type { Address } from "viem";
import { parseAddress } from "../sdk/index.ts";

export type LinkTerms = { chainId: number; contract: Address; payee: Address | null; tokens: Address[]; rpcUrl: string | null };

export function serviceUrl(location: Location = window.location): string {
  const param = new URLSearchParams(location.search).get("service");
  if (param) return param.replace(/\/+$/, "");
  return location.origin;
}

/** Terms from the link, or null when it carries none (or malformed ones, which are ignored). */
export function linkTerms(location: Location = window.location): LinkTerms | null {
  const q = new URLSearchParams(location.search);
  const chain = q.get("chain");
  const contract = q.get("contract");
  if (!chain || !contract || !/^\d{1,12}$/.test(chain)) return null;
  try {
    const payee = q.get("payee");
    return {
      chainId: Number(chain),
      contract: parseAddress(contract, "contract"),
      payee: payee ? parseAddress(payee, "payee") : null,
      tokens: q.getAll("token").map((t) => parseAddress(t, "token")),
      rpcUrl: q.get("rpc"),
    };
  } catch {
    return null;
  }
}
