/**
 * Wallet state, apart from chain and server state: EIP-6963 discovery (window.ethereum as the
 * fallback), the connected account and network, switching networks, and viem clients over the
 * wallet's provider.
 */
import { type Address, type Chain, createPublicClient, createWalletClient, custom, defineChain, getAddress } from "viem";
import { type Reader, type Wallet, WalletError } from "../sdk/index.ts";

export type Eip1193Provider = {
  request(args: { method: string; params?: unknown }): Promise<unknown>;
  on?(event: string, listener: (...args: unknown[]) => void): void;
  removeListener?(event: string, listener: (...args: unknown[]) => void): void;
};

export type WalletInfo = { uuid: string; name: string; icon: string; rdns: string };
export type WalletOption = { info: WalletInfo; provider: Eip1193Provider };

/**
 * Calls `onChange` with every wallet that announces itself (EIP-6963), and with
 * `window.ethereum` when nothing announced within a moment. Returns a stop function.
 */
export function discoverWallets(onChange: (options: WalletOption[]) => void): () => void {
  const found = new Map<string, WalletOption>();
  const announce = (event: Event) => {
    const detail = (event as CustomEvent<WalletOption>).detail;
    if (!detail?.info?.uuid || typeof detail.provider?.request !== "function") return;
    found.set(detail.info.uuid, { info: detail.info, provider: detail.provider });
    onChange([...found.values()]);
  };
  window.addEventListener("eip6963:announceProvider", announce);
  window.dispatchEvent(new Event("eip6963:requestProvider"));
  const fallback = window.setTimeout(() => {
    const injected = (window as unknown as { ethereum?: Eip1193Provider }).ethereum;
    if (found.size === 0 && injected) {
      found.set("injected", { info: { uuid: "injected", name: "Browser wallet", icon: "", rdns: "injected" }, provider: injected });
    }
    onChange([...found.values()]);
  }, 400);
  return () => {
    window.removeEventListener("eip6963:announceProvider", announce);
    window.clearTimeout(fallback);
  };
}

/** EIP-1193 errors as plain words; 4001 is the person saying no. */
export function walletError(error: unknown): WalletError {
  if (error instanceof WalletError) return error;
  const code = typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined;
  if (code === 4001) return new WalletError("rejected", "You rejected the request in your wallet; nothing was sent.", { cause: error });
  if (code === 4100) return new WalletError("no_account", "The wallet has not given this page access to an account.", { cause: error });
  if (code === 4200) return new WalletError("unsupported", "Your wallet does not support this request.", { cause: error });
  const message = error instanceof Error ? error.message : String(error);
  return new WalletError("failed", `The wallet reported an error: ${message.split("\n")[0]}`, { cause: error });
}

export async function requestAccount(provider: Eip1193Provider): Promise<Address> {
  try {
    const accounts = (await provider.request({ method: "eth_requestAccounts" })) as string[];
    if (!accounts?.[0]) throw new WalletError("no_account", "The wallet has no account to connect.");
    return getAddress(accounts[0]);
  } catch (error) {
    throw walletError(error);
  }
}

export async function currentChainId(provider: Eip1193Provider): Promise<number> {
  return Number.parseInt(String(await provider.request({ method: "eth_chainId" })), 16);
}

export type AddChainParameters = { chainName: string; rpcUrls: string[]; nativeCurrency: { name: string; symbol: string; decimals: number } };

/** What `wallet_addEthereumChain` needs for a network this page knows only by id and RPC URL. */
export function addChain(chainId: number, rpcUrl: string): AddChainParameters {
  return { chainName: `Chain ${chainId}`, rpcUrls: [rpcUrl], nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 } };
}

/** Asks the wallet to switch to `chainId`; adds the network first when the wallet does not know it and `add` is given. */
export async function switchChain(provider: Eip1193Provider, chainId: number, add?: AddChainParameters): Promise<void> {
  const hex = `0x${chainId.toString(16)}`;
  try {
    await provider.request({ method: "wallet_switchEthereumChain", params: [{ chainId: hex }] });
  } catch (error) {
    const code = (error as { code?: unknown })?.code;
    if (code === 4902 && add) {
      try {
        await provider.request({ method: "wallet_addEthereumChain", params: [{ chainId: hex, ...add }] });
        return;
      } catch (addError) {
        throw walletError(addError);
      }
    }
    if (code === 4902) throw new WalletError("wrong_chain", `Your wallet does not know network ${chainId}; add it in the wallet, then try again.`, { cause: error });
    throw walletError(error);
  }
}

export function chainFor(chainId: number): Chain {
  return defineChain({ id: chainId, name: `Chain ${chainId}`, nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [] } } });
}

/** viem clients over the wallet's provider: reads and writes both go through the wallet. */
export function clientsFor(provider: Eip1193Provider, chainId: number, account?: Address): { reader: Reader; wallet: Wallet | null } {
  const chain = chainFor(chainId);
  const transport = custom(provider, { retryCount: 0 });
  const reader = createPublicClient({ chain, transport, pollingInterval: 500 }) as Reader;
  const wallet = account ? (createWalletClient({ account, chain, transport }) as Wallet) : null;
  return { reader, wallet };
}
