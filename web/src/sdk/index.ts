/**
 * Piecework TypeScript SDK (protocol v2): typed data, signing and verification, ids, amounts,
 * errors, the payee service's HTTP API, and the PaymentChannels contract through viem.
 * No UI imports: usable from Node, a browser, or a worker.
 */
export * from "./amounts.ts";
export * from "./client.ts";
export * from "./contract.ts";
export * from "./errors.ts";
export * from "./ids.ts";
export * from "./signatures.ts";
export * from "./typedData.ts";
export { paymentChannelsAbi } from "./abi.generated.ts";
