// A manual check (not run by CI): does a large model load in a tab? Serves the page and one
// HF model folder, loads it through the page (with QLoRA chosen it is quantized as it streams
// from browser storage; with lora, a model past the tab's limit loads in NF4 by itself), and
// reports the time and the wasm memory. (A generation on SwiftShader takes too long to wait
// for at this size.)
//
// Usage: node big_model.mjs DIST MODEL_DIR [QUANT]   (QUANT: nf4 (default), q4_0, q4_1, q8_0, or lora)
// e.g. after `python3 bench/make_models.py /tmp/big qwen2.5-1.5b`:
//   node tests/browser/big_model.mjs dist /tmp/big/qwen2.5-1.5b
import { basename } from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchProfile, echo } from "./chromium.mjs";
import { serve } from "./serve.mjs";

const [dist, modelDir, quant = "nf4"] = process.argv.slice(2);
const name = basename(modelDir);
const server = await serve(dist, { [`/models/${name}/`]: modelDir });
// a profile on disk: a fresh (incognito-like) context keeps Cache Storage in memory, with a
// small quota
const profile = mkdtempSync(join(tmpdir(), "hearth-profile-"));
const browser = await launchProfile(profile);
try {
  const page = await browser.newPage();
  echo(page);
  await page.goto(server.url);
  await page.waitForFunction(() => /^Ready on|could not|not available/.test(document.getElementById("status").textContent), null, { timeout: 120_000 });
  await page.selectOption("#set-method", quant === "lora" ? "lora" : "qlora");
  if (quant !== "lora") await page.selectOption("#set-qlora_format", quant);
  const t0 = Date.now();
  await page.fill("#model-url", `models/${name}/`);
  await page.click("#load-url");
  await page.waitForFunction(() => /Model loaded|Could not/.test(document.getElementById("status").textContent), null, { timeout: 30 * 60_000 });
  const seconds = (Date.now() - t0) / 1000;
  console.log(`status: ${await page.textContent("#status")}`);
  console.log(`model: ${await page.textContent("#model-info")}`);
  const info = await page.evaluate(() => window.hearth.model);
  console.log(`loaded in ${seconds.toFixed(0)} s (download into the cache, then quantized as it streams); wasm memory ${(info.wasm_memory / 2 ** 30).toFixed(2)} GiB`);
} finally {
  await browser.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}
