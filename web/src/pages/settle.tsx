/**
 * The settle page, for anyone: paste a channel id, see its on-chain state, and `settle` once
 * `closesAt` has passed. It needs only a wallet and the contract address, not the freelancer's
 * service: settling matters most when that service is gone.
 */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import type { Address } from "viem";
import { linkTerms, serviceUrl } from "../app/config.ts";
import { Addr, Amount, Countdown, Notice, TxList, useChainClock, useTxs } from "../app/ui.tsx";
import { WalletBar, useWallet } from "../app/useWallet.tsx";
import { type OnchainChannel, InputError, type TokenInfo, PieceworkClient, getChannel, parseAddress, parseBytes32, plainMessage, settle, tokenInfo } from "../sdk/index.ts";

function App() {
  const link = linkTerms();
  const [contract, setContract] = useState<string>(link?.contract ?? "");
  const [chainId, setChainId] = useState<number | null>(link?.chainId ?? null);
  const [note, setNote] = useState<string | null>(null);
  const [id, setId] = useState(new URLSearchParams(window.location.search).get("channel") ?? "");
  const [channel, setChannel] = useState<OnchainChannel | null>(null);
  const [token, setToken] = useState<TokenInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [txs, track] = useTxs();
  const [chainNow, anchor] = useChainClock();
  const wallet = useWallet(chainId);

  useEffect(() => {
    if (link) return;
    new PieceworkClient({ baseUrl: serviceUrl() })
      .info()
      .then((info) => {
        setContract(info.contract);
        setChainId(info.chainId);
      })
      .catch(() => setNote("The freelancer's service did not answer; enter the contract address and connect a wallet on the channel's network."));
  }, []);

  const lookUp = async () => {
    setError(null);
    setChannel(null);
    try {
      const address: Address = parseAddress(contract.trim(), "contract address");
      const channelId = parseBytes32(id.trim(), "channel id");
      if (chainId === null && wallet.chainId !== null) setChainId(wallet.chainId);
      const reader = wallet.reader;
      if (!reader) throw new InputError("Connect a wallet on the channel's network to read the chain.");
      const block = await reader.getBlock();
      anchor(block.timestamp);
      const c = await getChannel(reader, { contract: address, channelId });
      if (c.status === "none") throw new InputError("No channel with this id exists on this contract.");
      setChannel(c);
      setToken(c.status === "closed" ? null : await tokenInfo(reader, c.token));
    } catch (e) {
      setError(plainMessage(e));
    }
  };

  useEffect(() => {
    // Without terms, the connected wallet's network is the one to read.
    if (chainId === null && wallet.chainId !== null) setChainId(wallet.chainId);
  }, [wallet.chainId]);

  const over = channel?.status === "closing" && chainNow() >= channel.closesAt;
  return (
    <main>
      <header>
        <h1>Settle a channel</h1>
        <p class="sub">Anyone may settle a channel whose challenge period is over: the freelancer keeps what was claimed, the rest goes back to the client.</p>
      </header>
      {note ? <Notice kind="info">{note}</Notice> : null}
      <WalletBar state={wallet} expectedChainId={chainId} />
      <section aria-labelledby="lookup-title">
        <h2 id="lookup-title">Channel</h2>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            void lookUp();
          }}
        >
          <label>
            Contract address
            <input name="contract" value={contract} onInput={(e) => setContract(e.currentTarget.value)} autoComplete="off" spellcheck={false} />
          </label>
          <label>
            Channel id
            <input name="channel" value={id} onInput={(e) => setId(e.currentTarget.value)} placeholder="0x…" autoComplete="off" spellcheck={false} />
          </label>
          <button type="submit">Look up</button>
        </form>
      </section>
      {error ? (
        <Notice kind="error" testId="error">
          {error}
        </Notice>
      ) : null}
      {channel ? (
        <section aria-labelledby="state-title" data-testid="state" data-status={channel.status}>
          <h2 id="state-title">On-chain state</h2>
          <dl class="facts">
            <dt>Status</dt>
            <dd data-testid="status">{channel.status}</dd>
            {channel.status !== "closed" ? (
              // A closed channel reads back with its addresses zeroed (the contract deletes
              // them): show no "client 0x000…" then.
              <>
                <dt>Client (payer)</dt>
                <dd>
                  <Addr value={channel.payer} />
                </dd>
              </>
            ) : null}
            {channel.status !== "closed" && token ? (
              <>
                <dt>Freelancer (payee)</dt>
                <dd>
                  <Addr value={channel.payee} />
                </dd>
                <dt>Deposit</dt>
                <dd>
                  <Amount value={channel.deposit} decimals={token.decimals} symbol={token.symbol} />
                </dd>
                <dt>Claimed by the freelancer</dt>
                <dd>
                  <Amount value={channel.claimed} decimals={token.decimals} symbol={token.symbol} />
                </dd>
                <dt>Refund to the client on settle</dt>
                <dd data-testid="refund">
                  <Amount value={channel.deposit - channel.claimed} decimals={token.decimals} symbol={token.symbol} />
                </dd>
              </>
            ) : null}
            {channel.status === "closing" ? (
              <>
                <dt>Settle possible from</dt>
                <dd>
                  {new Date(Number(channel.closesAt) * 1000).toLocaleString()} (<Countdown until={channel.closesAt} chainNow={chainNow} />)
                </dd>
              </>
            ) : null}
          </dl>
          {channel.status === "open" ? <p>The channel is open: its client must start closing it first.</p> : null}
          {channel.status === "closed" ? <p>The channel is closed; there is nothing left to settle.</p> : null}
          {channel.status === "closing" ? (
            <button
              type="button"
              disabled={!over || !wallet.wallet}
              onClick={async () => {
                setError(null);
                try {
                  await track("Settle", wallet.reader!, () => settle(wallet.wallet!, wallet.reader!, { contract: parseAddress(contract.trim()), channelId: channel.channelId }));
                } catch (e) {
                  setError(plainMessage(e));
                }
                await lookUp();
              }}
            >
              {over ? "Settle now" : "Settle (after the challenge period)"}
            </button>
          ) : null}
        </section>
      ) : null}
      <TxList txs={txs} />
    </main>
  );
}

render(<App />, document.getElementById("app")!);
