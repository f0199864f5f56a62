/** A real anvil on a free 127.0.0.1 port with PaymentChannels and test tokens deployed (tests only). */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Address, type Hex, createPublicClient, createTestClient, createWalletClient, getAddress, http } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../../..");
export const ANVIL = join(ROOT, "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");

/** anvil's publicly known development keys (accounts 0..4): never real money. */
export const DEV_KEYS = {
  deployer: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  freelancer: "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  client: "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  client2: "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
  bystander: "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
} as const satisfies Record<string, Hex>;
export const DEV = Object.fromEntries(Object.entries(DEV_KEYS).map(([k, v]) => [k, privateKeyToAccount(v).address])) as Record<keyof typeof DEV_KEYS, Address>;

export function artifact(path: string): { abi: readonly unknown[]; bytecode: Hex } {
  return JSON.parse(readFileSync(join(ROOT, "artifacts/contracts", path), "utf8"));
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      const port = typeof address === "object" && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export type Chain = {
  url: string;
  chainId: number;
  contract: Address;
  stablecoin: Address;
  plainToken: Address;
  stop: () => void;
  public: ReturnType<typeof makePublic>;
  test: ReturnType<typeof makeTest>;
};

const makePublic = (url: string) => createPublicClient({ chain: foundry, transport: http(url), pollingInterval: 20 });
const makeTest = (url: string) => createTestClient({ chain: foundry, mode: "anvil", transport: http(url) });

/** Starts anvil (native binary, stopped by PID), deploys, mints 1,000 TUSD/MNT to both clients. */
export async function startChain(): Promise<Chain> {
  const port = await freePort();
  const child: ChildProcess = spawn(ANVIL, ["--host", "127.0.0.1", "--port", String(port), "--chain-id", "31337", "--silent"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const stop = () => {
    if (child.exitCode === null) child.kill("SIGKILL");
  };
  const url = `http://127.0.0.1:${port}`;
  const pub = makePublic(url);
  for (let i = 0; ; i++) {
    try {
      await pub.getChainId();
      break;
    } catch (error) {
      if (i > 300 || child.exitCode !== null) {
        stop();
        throw error;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const deployer = createWalletClient({ account: privateKeyToAccount(DEV_KEYS.deployer), chain: foundry, transport: http(url) });
  const deploy = async (path: string) => {
    const { abi, bytecode } = artifact(path);
    const hash = await deployer.deployContract({ abi, bytecode });
    const receipt = await pub.waitForTransactionReceipt({ hash, pollingInterval: 20 });
    return getAddress(receipt.contractAddress!);
  };
  const contract = await deploy("PaymentChannels.sol/PaymentChannels.json");
  const stablecoin = await deploy("test/mocks/Tokens.sol/TestStablecoin.json");
  const plainToken = await deploy("test/mocks/Tokens.sol/MintableToken.json");
  for (const token of [stablecoin, plainToken]) {
    for (const to of [DEV.client, DEV.client2]) {
      const hash = await deployer.writeContract({
        address: token,
        abi: [{ type: "function", name: "mint", stateMutability: "nonpayable", inputs: [{ name: "to", type: "address" }, { name: "amount", type: "uint256" }], outputs: [] }],
        functionName: "mint",
        args: [to, token === stablecoin ? 1_000n * 10n ** 6n : 1_000n * 10n ** 18n],
      });
      await pub.waitForTransactionReceipt({ hash, pollingInterval: 20 });
    }
  }
  return { url, chainId: 31337, contract, stablecoin, plainToken, stop, public: pub, test: makeTest(url) };
}

/** Moves chain time forward and mines a block. */
export async function timeTravel(chain: Chain, seconds: number): Promise<void> {
  await chain.test.increaseTime({ seconds });
  await chain.test.mine({ blocks: 1 });
}
