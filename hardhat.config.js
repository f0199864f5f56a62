// Hardhat 3 configuration. Compiles offline with the pinned solc-js from npm (no compiler
// download); Solidity tests (unit, fuzz, invariant) run on EDR. See ../shared/TOOLCHAIN.md.
import { createRequire } from "node:module";
import { configVariable } from "hardhat/config";
import hardhatIgnition from "@nomicfoundation/hardhat-ignition";

const require = createRequire(import.meta.url);
const SOLC_VERSION = "0.8.30";
const soljson = require.resolve("solc/soljson.js");

// CI keeps the fuzz/invariant budget bounded; PIECEWORK_FUZZ_PROFILE=deep runs >= 100k calls.
const deep = process.env.PIECEWORK_FUZZ_PROFILE === "deep";

// One compiler configuration for every build profile. Hardhat builds with the `production`
// profile for Ignition deployments; left implicit, that profile compiles with its own defaults
// (optimizer runs 200, no viaIR, each file in isolation) and overwrites artifacts/ with bytecode
// that is neither the one tested nor the one in the gas table, recompiling everything first.
const compiler = {
  version: SOLC_VERSION,
  path: soljson,
  settings: {
    optimizer: { enabled: true, runs: 1_000_000 },
    evmVersion: "cancun",
    viaIR: true,
  },
};

export default {
  plugins: [hardhatIgnition],
  solidity: {
    profiles: { default: compiler, production: { ...compiler, isolated: false } },
  },
  test: {
    solidity: {
      fuzz: { runs: deep ? 5_000 : 256 },
      invariant: { runs: deep ? 2_000 : 256, depth: deep ? 100 : 50, failOnRevert: false },
    },
  },
  networks: {
    localhost: {
      type: "http",
      chainType: "l1",
      url: process.env.PIECEWORK_RPC_URL ?? "http://127.0.0.1:8545",
    },
    sepolia: {
      type: "http",
      chainType: "l1",
      url: configVariable("SEPOLIA_RPC_URL"),
      accounts: [configVariable("SEPOLIA_PRIVATE_KEY")],
    },
  },
};
