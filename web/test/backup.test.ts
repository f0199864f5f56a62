import assert from "node:assert/strict";
import { test } from "node:test";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { linkTerms, serviceUrl } from "../src/app/config.ts";
import { type Backup, readBackup, writeBackup } from "../src/pages/client/backup.ts";
import { InputError, ZERO_ADDRESS, channelId, randomSalt } from "../src/sdk/index.ts";
import { DEV } from "./support/chain.ts";

const expected = { chainId: 31337, contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3" as const, payer: DEV.client };

function backup(): Backup {
  const privateKey = generatePrivateKey();
  const salt = randomSalt();
  return {
    ...expected,
    signer: { address: privateKeyToAccount(privateKey).address, privateKey },
    channels: [{ channelId: channelId({ payer: DEV.client, payee: DEV.freelancer, token: ZERO_ADDRESS, salt }), payee: DEV.freelancer, token: ZERO_ADDRESS, salt, service: "https://f.example", cumulative: 2n ** 70n, highestSigned: 2n ** 70n + 5n }],
  };
}

test("a backup reads back exactly what was written", () => {
  const b = backup();
  assert.deepEqual(readBackup(writeBackup(b), expected), b);
});

test("a damaged, altered or foreign backup is refused in plain words", () => {
  const b = backup();
  const json = JSON.parse(writeBackup(b));
  const cases: [unknown, RegExp][] = [
    ["not json", /not JSON/],
    [{ ...json, type: "other" }, /not a Piecework signer backup/],
    [{ ...json, privateKey: "0x1234" }, /key is damaged/],
    [{ ...json, address: DEV.bystander }, /does not match its address/],
    [{ ...json, chainId: 1 }, /another account, network or contract/],
    [{ ...json, payer: DEV.bystander }, /another account, network or contract/],
    [{ ...json, channels: [{ ...json.channels[0], payee: DEV.bystander }] }, /Channel 1 .* does not match its own payee, token and salt/],
    [{ ...json, channels: [{ ...json.channels[0], cumulative: "-1" }] }, /cumulative must be a decimal string/],
  ];
  for (const [input, message] of cases) {
    const text = typeof input === "string" ? input : JSON.stringify(input);
    assert.throws(() => readBackup(text, expected), (e: unknown) => e instanceof InputError && message.test(e.shortMessage), message.source);
  }
});

test("the service is the page's origin unless ?service= says otherwise; link terms are parsed strictly", () => {
  const at = (href: string) => new URL(href) as unknown as Location;
  assert.equal(serviceUrl(at("https://freelancer.example/index.html")), "https://freelancer.example");
  assert.equal(serviceUrl(at("https://pages.example/?service=https://f.example/")), "https://f.example");
  assert.equal(linkTerms(at("https://p.example/")), null);
  assert.equal(linkTerms(at("https://p.example/?chain=1&contract=0x123")), null);
  assert.deepEqual(linkTerms(at(`https://p.example/?chain=31337&contract=${expected.contract.toLowerCase()}&payee=${DEV.freelancer}&token=${ZERO_ADDRESS}&rpc=http://127.0.0.1:8545`)), {
    chainId: 31337,
    contract: expected.contract,
    payee: DEV.freelancer,
    tokens: [ZERO_ADDRESS],
    rpcUrl: "http://127.0.0.1:8545",
  });
});
