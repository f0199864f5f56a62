import assert from "node:assert/strict";
import { test } from "node:test";
import { InputError, formatAmount, parseAmount, parseUint } from "../src/sdk/index.ts";

test("parseAmount turns human amounts into exact base units", () => {
  const cases: [string, number, bigint][] = [
    ["1", 18, 10n ** 18n],
    ["0.000000000000000001", 18, 1n],
    ["1.25", 6, 1_250_000n],
    [" 12.5 ", 6, 12_500_000n],
    [".5", 6, 500_000n],
    ["5.", 6, 5_000_000n],
    ["0", 6, 0n],
    ["7", 0, 7n],
    ["123456789012345678901234567890.123456789012345678", 18, 123456789012345678901234567890123456789012345678n],
  ];
  for (const [text, decimals, want] of cases) assert.equal(parseAmount(text, decimals), want, `${text} @ ${decimals}`);
});

test("parseAmount refuses instead of rounding, with plain words", () => {
  const cases: [string, number, RegExp][] = [
    ["1.2345678", 6, /TUSD has 6 decimals; 1.2345678 has 7/],
    ["1.5", 0, /no fractional units/],
    ["", 6, /Enter an amount/],
    ["-1", 6, /not an amount/],
    ["1e6", 6, /not an amount/],
    ["1,000", 6, /not an amount/],
    [".", 6, /not an amount/],
    ["0x10", 6, /not an amount/],
    ["1".padEnd(80, "0"), 0, /too large/],
  ];
  for (const [text, decimals, message] of cases) {
    assert.throws(() => parseAmount(text, decimals, "TUSD"), (e: unknown) => e instanceof InputError && message.test(e.shortMessage), text);
  }
});

test("formatAmount is exact, trims zeros, groups thousands and marks a cut", () => {
  assert.equal(formatAmount(10n ** 18n, 18), "1");
  assert.equal(formatAmount(1n, 18), "0.000000000000000001");
  assert.equal(formatAmount(1_250_000n, 6, { symbol: "TUSD" }), "1.25 TUSD");
  assert.equal(formatAmount(1_234_567_000_000n, 6), "1,234,567");
  assert.equal(formatAmount(1_234_567_000_000n, 6, { group: false }), "1234567");
  assert.equal(formatAmount(-1_500_000n, 6), "-1.5");
  assert.equal(formatAmount(1_234_567n, 6, { maxFractionDigits: 2 }), "1.23…");
  assert.equal(formatAmount(2n ** 256n - 1n, 0).replaceAll(",", ""), (2n ** 256n - 1n).toString());
});

test("format then parse is the identity for any amount and decimals", () => {
  for (const decimals of [0, 1, 6, 18, 30]) {
    for (const value of [0n, 1n, 9n, 10n, 999_999n, 10n ** 18n + 7n, 2n ** 96n - 1n]) {
      assert.equal(parseAmount(formatAmount(value, decimals, { group: false }), decimals), value);
    }
  }
});

test("parseUint accepts only canonical decimal strings within uint256", () => {
  assert.equal(parseUint("0", "x"), 0n);
  assert.equal(parseUint((2n ** 256n - 1n).toString(), "x"), 2n ** 256n - 1n);
  for (const bad of ["01", "-1", "1.0", "", " 1", 1, null, "1e3", (2n ** 256n).toString()]) {
    assert.throws(() => parseUint(bad, "amount"), InputError, String(bad));
  }
});
