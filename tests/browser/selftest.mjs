// Opens the built page (dist/) in headless Chromium with WebGPU (SwiftShader) and checks that
// hearth-core's matmul ran on the GPU and matched the CPU. Usage: node selftest.mjs DIST OUT_PNG
import { chromium } from "playwright-core";
import { serve } from "./serve.mjs";

const [dist, screenshot] = process.argv.slice(2);
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-webgpu", "--disable-quic",
  "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--remote-debugging-pipe"];

const server = await serve(dist);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  ignoreDefaultArgs: true,
  args: FLAGS,
});
let failed = true;
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.log(`[page] ${m.text()}`));
  page.on("pageerror", (e) => console.log(`[page error] ${e.message}`));
  await page.goto(server.url);
  const status = page.locator("#status");
  await page.waitForFunction(() => !document.getElementById("status").textContent.startsWith("Checking"), null, { timeout: 180_000 });
  const text = await status.textContent();
  console.log(`status: ${text}`);
  failed = !text.includes("(ok)");
  if (screenshot) await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
  server.close();
}
if (failed) {
  console.error("FAILED: the page did not report a matching GPU matmul");
  process.exit(1);
}
console.log("browser self-check passed");
