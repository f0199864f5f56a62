// The SDK's ABI is generated from the Hardhat artifact; these checks fail when the copy is stale
// or when the contract and PROTOCOL.md disagree about a function's name or argument types.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { paymentChannelsAbi } from "../src/sdk/index.ts";
import { ROOT, artifact } from "./support/chain.ts";

test("the generated ABI is the artifact's ABI", () => {
  assert.deepEqual(paymentChannelsAbi, artifact("PaymentChannels.sol/PaymentChannels.json").abi);
});

function protocolText(): string | null {
  for (const path of [join(ROOT, "docs/PROTOCOL.md"), join(ROOT, "../shared/PROTOCOL.md")]) {
    if (existsSync(path)) {
      const text = readFileSync(path, "utf8");
      if (/^# Piecework protocol \(v2\)/m.test(text)) return text;
    }
  }
  return null;
}
const protocol = protocolText();

test(
  "every function PROTOCOL.md lists exists in the ABI with the same argument types",
  { skip: protocol === null ? "no v2 PROTOCOL.md found (docs/ or ../shared/)" : false },
  () => {
    const section = protocol!.slice(protocol!.indexOf("Functions (external):"), protocol!.indexOf("\nEvents:"));
    const listed = [...section.matchAll(/^- `(\w+)\(([^)]*)\)/gm)].map(([, name, params]) => ({
      name: name!,
      types: params!
        .split(",")
        .map((p) => p.trim().split(/\s+/)[0]!)
        .filter(Boolean)
        .map((t) => (t === "Claim[]" ? "tuple[]" : t)),
    }));
    assert.ok(listed.length >= 12, `found ${listed.length} functions in PROTOCOL.md`);
    for (const { name, types } of listed) {
      const fn = paymentChannelsAbi.find((item) => item.type === "function" && item.name === name);
      assert.ok(fn && fn.type === "function", `${name} is in the ABI`);
      assert.deepEqual(fn.inputs.map((i) => i.type), types, `${name} argument types`);
    }
  },
);
