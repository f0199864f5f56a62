/** The channel terms the client page works with: from the service, the last visit, or the link. */
import type { Address } from "viem";
import * as db from "../../app/db.ts";
import { linkTerms } from "../../app/config.ts";
import { type PieceworkClient, type Reader, type TokenInfo, ZERO_ADDRESS, plainMessage, tokenInfo } from "../../sdk/index.ts";

export type Terms = {
  chainId: number;
  contract: Address;
  payee: Address;
  minChallengePeriod: bigint;
  tokens: { address: Address; minDeposit: bigint; symbol: string; decimals: number }[];
  rpcUrl: string | null;
  source: "service" | "saved" | "link";
};

/**
 * `GET /v1/info` when the service answers (and saved for later visits); otherwise the saved
 * terms, so channels stay usable on chain; otherwise the link's terms; otherwise none.
 */
export async function loadTerms(api: PieceworkClient, service: string): Promise<{ terms: Terms | null; serviceError: string | null }> {
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
export function cachedTokenInfo(reader: Reader, token: Address): Promise<TokenInfo> {
  let hit = tokenCache.get(token);
  if (!hit) {
    hit = tokenInfo(reader, token);
    hit.catch(() => tokenCache.delete(token));
    tokenCache.set(token, hit);
  }
  return hit;
}
