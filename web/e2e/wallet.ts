/**
 * A test wallet injected into every page of a browser context: an EIP-1193 provider announced
 * via EIP-6963 (and as window.ethereum) that forwards to anvil, whose dev accounts are unlocked.
 * It answers the wallet-only methods itself, can be told to reject the next request of a kind
 * or to sit on another network, and records every request the page makes of it.
 */
import type { BrowserContext } from "@playwright/test";

/** Requests that make a real wallet show a prompt. */
export const PROMPTS = new Set([
  "eth_requestAccounts",
  "eth_sendTransaction",
  "eth_signTypedData_v4",
  "eth_signTypedData_v3",
  "eth_signTypedData",
  "personal_sign",
  "eth_sign",
  "wallet_switchEthereumChain",
  "wallet_addEthereumChain",
  "wallet_watchAsset",
]);

export type TestWallet = {
  /** Every request in order: method and params. */
  readonly requests: { method: string; params: unknown }[];
  account: string;
  /** The network the wallet reports (and sends on). */
  chainId: number;
  /** Networks the wallet knows (switching to another gets 4902 until it is added). */
  readonly known: Set<number>;
  rejectNext(method: string): void;
  /** How many prompt requests of each method the page made (from index `since`). */
  prompts(since?: number): Record<string, number>;
};

export async function installWallet(context: BrowserContext, options: { rpcUrl: string; account: string; chainId: number; realChainId: number }): Promise<TestWallet> {
  const rejections = new Set<string>();
  const wallet: TestWallet = {
    requests: [],
    account: options.account,
    chainId: options.chainId,
    known: new Set([options.realChainId]),
    rejectNext: (method) => void rejections.add(method),
    prompts(since = 0) {
      const counts: Record<string, number> = {};
      for (const r of this.requests.slice(since)) if (PROMPTS.has(r.method)) counts[r.method] = (counts[r.method] ?? 0) + 1;
      return counts;
    },
  };
  const error = (code: number, message: string) => JSON.stringify({ error: { code, message } });
  let id = 0;
  await context.exposeFunction("__pieceworkTestWallet", async (method: string, paramsJson: string) => {
    const params = JSON.parse(paramsJson) as unknown[];
    wallet.requests.push({ method, params });
    if (rejections.delete(method)) return error(4001, "User rejected the request.");
    switch (method) {
      case "eth_requestAccounts":
      case "eth_accounts":
        return JSON.stringify({ result: [wallet.account] });
      case "eth_chainId":
        return JSON.stringify({ result: `0x${wallet.chainId.toString(16)}` });
      case "net_version":
        return JSON.stringify({ result: String(wallet.chainId) });
      case "wallet_switchEthereumChain": {
        const target = Number.parseInt(String((params[0] as { chainId: string }).chainId), 16);
        if (!wallet.known.has(target)) return error(4902, `Unrecognized chain ID ${target}. Try adding the chain using wallet_addEthereumChain first.`);
        wallet.chainId = target;
        return JSON.stringify({ result: null, chainChanged: `0x${target.toString(16)}` });
      }
      case "wallet_addEthereumChain": {
        const target = Number.parseInt(String((params[0] as { chainId: string }).chainId), 16);
        wallet.known.add(target);
        wallet.chainId = target;
        return JSON.stringify({ result: null, chainChanged: `0x${target.toString(16)}` });
      }
      case "wallet_watchAsset":
        return JSON.stringify({ result: true });
    }
    if (wallet.chainId !== options.realChainId) {
      // This wallet only reaches anvil; on "another network" it refuses rather than pretend.
      return error(4901, `The test wallet is on network ${wallet.chainId}, which it cannot reach.`);
    }
    if (method === "eth_sendTransaction") {
      const tx = params[0] as { from?: string };
      if (tx.from?.toLowerCase() !== wallet.account.toLowerCase()) return error(4100, "The requested account has not been authorized by the user.");
    }
    if (method.startsWith("eth_signTypedData") && String(params[0]).toLowerCase() !== wallet.account.toLowerCase()) {
      return error(4100, "The requested account has not been authorized by the user.");
    }
    const response = await fetch(options.rpcUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params }),
    });
    const body = (await response.json()) as { result?: unknown; error?: { code: number; message: string; data?: unknown } };
    return JSON.stringify(body.error ? { error: body.error } : { result: body.result ?? null });
  });
  await context.addInitScript(() => {
    type Listener = (...args: unknown[]) => void;
    const listeners = new Map<string, Set<Listener>>();
    const emit = (event: string, value: unknown) => listeners.get(event)?.forEach((fn) => fn(value));
    const call = (window as unknown as { __pieceworkTestWallet: (m: string, p: string) => Promise<string> }).__pieceworkTestWallet;
    const provider = {
      isPieceworkTestWallet: true,
      async request(args: { method: string; params?: unknown }) {
        const answer = JSON.parse(await call(args.method, JSON.stringify(args.params ?? []))) as {
          result?: unknown;
          error?: { code: number; message: string; data?: unknown };
          chainChanged?: string;
        };
        if (answer.error) {
          const e = new Error(answer.error.message) as Error & { code: number; data?: unknown };
          e.code = answer.error.code;
          e.data = answer.error.data;
          throw e;
        }
        if (answer.chainChanged) queueMicrotask(() => emit("chainChanged", answer.chainChanged));
        return answer.result;
      },
      on(event: string, fn: Listener) {
        if (!listeners.has(event)) listeners.set(event, new Set());
        listeners.get(event)!.add(fn);
      },
      removeListener(event: string, fn: Listener) {
        listeners.get(event)?.delete(fn);
      },
    };
    const info = {
      uuid: "6b1c4e2a-7d0f-4a51-9c55-0e2f6d5b9a11",
      name: "Piecework Test Wallet",
      icon: "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect width='16' height='16' fill='%230b5cad'/%3E%3C/svg%3E",
      rdns: "dev.piecework.testwallet",
    };
    (window as unknown as { ethereum: unknown }).ethereum = provider;
    const announce = () => window.dispatchEvent(new CustomEvent("eip6963:announceProvider", { detail: Object.freeze({ info, provider }) }));
    window.addEventListener("eip6963:requestProvider", announce);
    announce();
  });
  return wallet;
}
