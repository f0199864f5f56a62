// Browser tests: Playwright driving Debian's Chromium (no browser download) against a real
// anvil and the built pages. One worker: the machine has 2 cores shared with other work.
import { defineConfig } from "@playwright/test";

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export default defineConfig({
  testDir: ".",
  testMatch: "*.spec.ts",
  timeout: 90_000,
  expect: { timeout: 15_000 },
  workers: 1,
  fullyParallel: false,
  forbidOnly: !!process.env.CI,
  reporter: [["list"]],
  outputDir: "../test-results",
  use: {
    browserName: "chromium",
    headless: true,
    launchOptions: { executablePath: process.env.PIECEWORK_CHROMIUM ?? "/usr/bin/chromium", args: CHROMIUM_ARGS },
    viewport: { width: 1100, height: 900 },
    actionTimeout: 15_000,
    trace: "off",
  },
});
