import assert from "node:assert/strict";
import { test } from "node:test";
import { keccak256, toBytes } from "viem";
import { InputError, channelId, parseAddress, parseBytes32, randomSalt, taskHash, validateTaskId } from "../src/sdk/index.ts";

test("taskHash is keccak256 of the UTF-8 task id", () => {
  assert.equal(taskHash("task-1"), keccak256(toBytes("task-1")));
  // Known value, independent of viem's utf8: keccak256("logo-42")
  assert.equal(taskHash("logo-42"), keccak256(new TextEncoder().encode("logo-42")));
  assert.equal(taskHash("é✓😀"), keccak256(Uint8Array.from([0xc3, 0xa9, 0xe2, 0x9c, 0x93, 0xf0, 0x9f, 0x98, 0x80])));
});

test("task ids: 1..256 code points, no control characters, no lone surrogates", () => {
  const ok = ["a", "x".repeat(256), "😀".repeat(256), "tâche #42 — logo", "\u00a0nbsp"];
  for (const id of ok) assert.doesNotThrow(() => validateTaskId(id), id);
  const bad: [string, RegExp][] = [
    ["", /empty/],
    ["x".repeat(257), /257 characters/],
    ["😀".repeat(257), /257 characters/],
    ["a\nb", /control character \(U\+000A\) at position 2/],
    ["a\u0000", /U\+0000/],
    ["\u007f", /U\+007F/],
    ["\u0085", /U\+0085/],
    ["a\ud800", /unpaired surrogate at position 2/],
    ["\udc00b", /unpaired surrogate at position 1/],
  ];
  for (const [id, message] of bad) {
    assert.throws(() => taskHash(id), (e: unknown) => e instanceof InputError && message.test(e.shortMessage), JSON.stringify(id));
  }
});

test("bytes32 and addresses are validated, never padded", () => {
  assert.throws(() => parseBytes32("0x1234"), InputError);
  assert.throws(() => parseBytes32(`0x${"g".repeat(64)}`), InputError);
  assert.equal(parseBytes32(`0x${"AB".repeat(32)}`), `0x${"ab".repeat(32)}`);
  assert.equal(parseAddress("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
  // Wrong checksum (one letter's case flipped): a typo, refused.
  assert.throws(() => parseAddress("0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"), InputError);
  assert.throws(() => parseAddress("0x123"), InputError);
});

test("channel ids depend on every input; salts are fresh", () => {
  const base = { payer: parseAddress("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"), payee: parseAddress("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"), token: parseAddress("0x0000000000000000000000000000000000000000"), salt: `0x${"11".repeat(32)}` as const };
  const id = channelId(base);
  assert.match(id, /^0x[0-9a-f]{64}$/);
  assert.notEqual(channelId({ ...base, salt: `0x${"12".repeat(32)}` }), id);
  assert.notEqual(channelId({ ...base, payee: base.payer }), id);
  assert.throws(() => channelId({ ...base, salt: "0x11" }), InputError);
  assert.notEqual(randomSalt(), randomSalt());
});
