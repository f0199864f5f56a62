/** The wallet hook and bar every page uses: discover, connect, follow account and network changes. */
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import { type Address, getAddress } from "viem";
import { type Reader, type Wallet, plainMessage } from "../sdk/index.ts";
import { Addr, Notice } from "./ui.tsx";
import { type AddChainParameters, type WalletOption, clientsFor, currentChainId, discoverWallets, requestAccount, switchChain } from "./wallet.ts";

const REMEMBER_KEY = "piecework-wallet";

export type WalletState = {
  options: WalletOption[];
  selected: WalletOption | null;
  account: Address | null;
  chainId: number | null;
  error: string | null;
  connect: (option: WalletOption) => Promise<void>;
  switchTo: (chainId: number, add?: AddChainParameters) => Promise<void>;
  /** Clients over the wallet, on the expected chain only (null otherwise). */
  reader: Reader | null;
  wallet: Wallet | null;
  setError: (message: string | null) => void;
};

export function useWallet(expectedChainId: number | null): WalletState {
  const [options, setOptions] = useState<WalletOption[]>([]);
  const [selected, setSelected] = useState<WalletOption | null>(null);
  const [account, setAccount] = useState<Address | null>(null);
  const [chainId, setChainId] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => discoverWallets(setOptions), []);

  // Reconnect after a reload without a prompt: eth_accounts answers only if the wallet already
  // granted this page an account.
  useEffect(() => {
    const remembered = localStorage.getItem(REMEMBER_KEY);
    const option = options.find((o) => o.info.rdns === remembered);
    if (!option || selected) return;
    void (async () => {
      try {
        const accounts = (await option.provider.request({ method: "eth_accounts" })) as string[];
        if (!accounts?.[0]) return;
        setSelected(option);
        setAccount(getAddress(accounts[0]));
        setChainId(await currentChainId(option.provider));
      } catch {
        // Not connected: the person clicks Connect.
      }
    })();
  }, [options]);

  useEffect(() => {
    const provider = selected?.provider;
    if (!provider?.on) return;
    const onAccounts = (accounts: unknown) => {
      const list = accounts as string[];
      setAccount(list?.[0] ? getAddress(list[0]) : null);
    };
    const onChain = (id: unknown) => setChainId(Number.parseInt(String(id), 16));
    provider.on("accountsChanged", onAccounts);
    provider.on("chainChanged", onChain);
    return () => {
      provider.removeListener?.("accountsChanged", onAccounts);
      provider.removeListener?.("chainChanged", onChain);
    };
  }, [selected]);

  const connect = useCallback(async (option: WalletOption) => {
    setError(null);
    try {
      const address = await requestAccount(option.provider);
      localStorage.setItem(REMEMBER_KEY, option.info.rdns);
      setSelected(option);
      setAccount(address);
      setChainId(await currentChainId(option.provider));
    } catch (e) {
      setError(plainMessage(e));
    }
  }, []);

  const switchTo = useCallback(
    async (target: number, add?: AddChainParameters) => {
      if (!selected) return;
      setError(null);
      try {
        await switchChain(selected.provider, target, add);
        setChainId(await currentChainId(selected.provider));
      } catch (e) {
        setError(plainMessage(e));
      }
    },
    [selected],
  );

  const clients = useMemo(() => {
    if (!selected || chainId === null || expectedChainId === null || chainId !== expectedChainId) return { reader: null, wallet: null };
    return clientsFor(selected.provider, chainId, account ?? undefined);
  }, [selected, chainId, account, expectedChainId]);

  return { options, selected, account, chainId, error, connect, switchTo, reader: clients.reader, wallet: clients.wallet, setError };
}

export function WalletBar(props: { state: WalletState; expectedChainId: number | null; add?: AddChainParameters; role?: string }) {
  const { state, expectedChainId } = props;
  const [busy, setBusy] = useState(false);
  const run = async (f: () => Promise<void>) => {
    setBusy(true);
    try {
      await f();
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="wallet" aria-labelledby="wallet-title">
      <h2 id="wallet-title">Wallet</h2>
      {state.account ? (
        <p data-testid="wallet-account">
          Connected {props.role ? `as the ${props.role} ` : ""}
          <Addr value={state.account} label="account" /> with {state.selected?.info.name} on network {state.chainId}.
        </p>
      ) : state.options.length === 0 ? (
        <p>No browser wallet found. Install one (e.g. MetaMask), then reload this page.</p>
      ) : (
        <div class="row">
          {state.options.map((o) => (
            <button key={o.info.uuid} type="button" disabled={busy} onClick={() => run(() => state.connect(o))}>
              {o.info.icon ? <img src={o.info.icon} alt="" width={16} height={16} /> : null} Connect {o.info.name}
            </button>
          ))}
        </div>
      )}
      {state.account && expectedChainId !== null && state.chainId !== expectedChainId ? (
        <Notice kind="warn" testId="wrong-network">
          Your wallet is on network {state.chainId}, but these channels are on network {expectedChainId}.{" "}
          <button type="button" disabled={busy} onClick={() => run(() => state.switchTo(expectedChainId, props.add))}>
            Switch to network {expectedChainId}
          </button>
        </Notice>
      ) : null}
      {state.error ? (
        <Notice kind="error" testId="wallet-error">
          {state.error}
        </Notice>
      ) : null}
    </section>
  );
}
