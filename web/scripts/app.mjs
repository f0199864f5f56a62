// `make app`: a local chain, the contracts, the payee service and the pages, for a person to try
// the whole flow by hand in a browser wallet. Stops everything it started (by PID) on Ctrl-C.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createPublicClient, createWalletClient, getAddress, http, parseAbi } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
const ANVIL = join(ROOT, "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
const PIECEWORK = join(ROOT, ".venv/bin/piecework");
// anvil's publicly known development keys: never put real money on them.
const KEYS = {
  deployer: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  freelancer: "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  client: "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  client2: "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
};
const children = [];

function signal(child, name) {
  if (child.exitCode === null && child.signalCode === null && child.pid) {
    try {
      process.kill(-child.pid, name);
    } catch {}
  }
}
/** Newest first, each given a moment to exit, so the service never logs a vanished node. */
async function stopAll(code) {
  for (const child of [...children].reverse()) {
    signal(child, "SIGTERM");
    await Promise.race([new Promise((r) => child.once("exit", r)), new Promise((r) => setTimeout(r, 5000))]);
    signal(child, "SIGKILL");
  }
  process.exit(code);
}
process.on("SIGINT", () => void stopAll(130));
process.on("SIGTERM", () => void stopAll(143));
process.on("exit", () => children.forEach((c) => signal(c, "SIGKILL")));

function start(command, args, env) {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "inherit"], detached: true });
  children.push(child);
  return child;
}

async function port(preferred) {
  const tryPort = (p) =>
    new Promise((resolve) => {
      const srv = createNetServer();
      srv.once("error", () => resolve(null));
      srv.listen(p, "127.0.0.1", () => srv.close(() => resolve(srv.address()?.port ?? p)));
    });
  return (preferred && (await tryPort(preferred))) || (await new Promise((resolve) => {
    const srv = createNetServer();
    srv.listen(0, "127.0.0.1", () => {
      const p = srv.address().port;
      srv.close(() => resolve(p));
    });
  }));
}

async function until(what, check, seconds = 30) {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    try {
      const value = await check();
      if (value) return value;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not come up within ${seconds}s`);
}

function artifact(path) {
  const file = join(ROOT, "artifacts/contracts", path);
  if (!existsSync(file)) throw new Error(`missing ${file}: run npm run build:contracts`);
  return JSON.parse(readFileSync(file, "utf8"));
}


const rpcPort = await port(8545);
const rpcUrl = `http://127.0.0.1:${rpcPort}`;
start(ANVIL, ["--host", "127.0.0.1", "--port", String(rpcPort), "--chain-id", "31337", "--silent"]);
const pub = createPublicClient({ chain: foundry, transport: http(rpcUrl), pollingInterval: 50 });
await until("anvil", () => pub.getChainId());

const deployer = createWalletClient({ account: privateKeyToAccount(KEYS.deployer), chain: foundry, transport: http(rpcUrl) });
async function deploy(path) {
  const { abi, bytecode } = artifact(path);
  const receipt = await pub.waitForTransactionReceipt({ hash: await deployer.deployContract({ abi, bytecode }) });
  return getAddress(receipt.contractAddress);
}
const contract = await deploy("PaymentChannels.sol/PaymentChannels.json");
const tusd = await deploy("test/mocks/Tokens.sol/TestStablecoin.json");
for (const key of [KEYS.client, KEYS.client2]) {
  const hash = await deployer.writeContract({ address: tusd, abi: parseAbi(["function mint(address to, uint256 amount)"]), functionName: "mint", args: [privateKeyToAccount(key).address, 1_000_000_000n] });
  await pub.waitForTransactionReceipt({ hash });
}

const operatorToken = randomBytes(24).toString("base64url");
const servicePort = await port(8000);
const serviceUrl = `http://127.0.0.1:${servicePort}`;
const dir = mkdtempSync(join(tmpdir(), "piecework-app-"));
const service = start(PIECEWORK, ["serve", "--host", "127.0.0.1", "--port", String(servicePort)], {
  PIECEWORK_RPC_URL: rpcUrl,
  PIECEWORK_PUBLIC_RPC_URL: rpcUrl,
  PIECEWORK_CONTRACT_ADDRESS: contract,
  PIECEWORK_PRIVATE_KEY: KEYS.freelancer,
  PIECEWORK_OPERATOR_TOKEN: operatorToken,
  PIECEWORK_DATABASE_URL: `sqlite:///${join(dir, "piecework.db")}`,
  PIECEWORK_ACCEPTED_TOKENS: `ETH:1000000000000000,${tusd}:1000000`,
  PIECEWORK_MIN_CHALLENGE_PERIOD: "3600",
});
const info = await until("piecework serve", async () => (service.exitCode === null ? (await fetch(`${serviceUrl}/v1/info`)).json() : Promise.reject(new Error("exited"))));
const home = await fetch(`${serviceUrl}/`).catch(() => null);
if (info.version !== "2" || !home?.ok || !(home.headers.get("content-type") ?? "").includes("text/html")) {
  console.error(`piecework serve at ${serviceUrl} does not serve the pages (answered ${home?.status ?? "nothing"}): run npm run build:web, then make app again`);
  await stopAll(1);
}

console.log(`
Piecework is running (Ctrl-C stops everything).

  Client page          ${serviceUrl}/
  Freelancer dashboard ${serviceUrl}/dashboard.html   operator token: ${operatorToken}
  Settle page          ${serviceUrl}/settle.html
  Service              ${serviceUrl}   chain ${rpcUrl} (id 31337)
  PaymentChannels      ${contract}
  TUSD (6 decimals)    ${tusd}

Try it with MetaMask:
  1. Settings > Networks > Add a network manually: RPC URL ${rpcUrl}, chain ID 31337, symbol ETH.
  2. Import account > private key of anvil's dev account 2 (the client, 10,000 ETH, 1,000 TUSD):
       ${KEYS.client}
     For the dashboard's claims, also import dev account 1 (the freelancer):
       ${KEYS.freelancer}
     These keys are public: never send real money to them.
  3. Optionally import the token ${tusd} to see TUSD balances in the wallet.
  4. To skip a challenge period (one hour):
       curl -s -X POST -H 'content-type: application/json' --data '{"jsonrpc":"2.0","id":1,"method":"evm_increaseTime","params":[3600]}' ${rpcUrl}
       curl -s -X POST -H 'content-type: application/json' --data '{"jsonrpc":"2.0","id":2,"method":"evm_mine","params":[]}' ${rpcUrl}
  After restarting anvil, MetaMask may need Settings > Advanced > Clear activity tab data.
`);
await new Promise(() => {});
