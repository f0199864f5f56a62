import assert from "node:assert/strict";
import { test } from "node:test";
import { toCsv } from "../src/app/csv.ts";
import { readEventStream } from "../src/sdk/index.ts";

test("CSV quotes every cell and defuses formulas in text chosen by others", () => {
  const csv = toCsv(["task", "amount"], [["=HYPERLINK(\"x\")", 5n], ["+1", null], ["plain, \"quoted\"", 10n], ["-2", -3n]]);
  assert.equal(csv, '"task","amount"\r\n"\'=HYPERLINK(""x"")","5"\r\n"\'+1",""\r\n"plain, ""quoted""","10"\r\n"\'-2","-3"\r\n');
});

test("the SSE reader splits events across chunk boundaries, skips comments and bad JSON", async () => {
  const chunks = [": keepalive\n\nevent: payment\ndata: {\"amount\":", "\"5\"}\n\n", "data: not json\n\nevent: watchtower\r\ndata: {\"closing\":[]}\r\n\r\n"];
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
      controller.close();
    },
  });
  const events: unknown[] = [];
  await readEventStream(stream, (e) => events.push(e));
  assert.deepEqual(events, [
    { type: "payment", data: { amount: "5" } },
    { type: "watchtower", data: { closing: [] } },
  ]);
});
