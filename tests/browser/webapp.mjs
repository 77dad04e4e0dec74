// The web app end to end in headless Chromium (WebGPU on SwiftShader): load the tiny Llama
// fixture from a served models/ folder, train a few steps, check the loss chart and that the
// loss fell, chat with both models, score a text, download the adapter, and check that
// `hearth score --adapter` prints the NLL the page showed. Then reload: the saved run is
// offered and resumes to the same adapter; early stopping and divergence end runs. Then a
// non-llama family (the tiny Qwen3: per-head q/k norms, tied embeddings) loads, names its
// features and trains. Last, a browser without WebGPU gets the help page.
//
// Usage: node webapp.mjs DIST OUT_DIR HEARTH_BINARY
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { launch, echo } from "./chromium.mjs";
import { serve } from "./serve.mjs";

const [dist, out, hearth] = process.argv.slice(2);
const repo = resolve(import.meta.dirname, "../..");
const fixture = join(repo, "tests/fixtures/tiny-llama");
const DATA = readFileSync(join(repo, "tests/fixtures/peft/tiny-llama/data.jsonl"), "utf8");
const SCORE_TEXT = "Hello world, tiny models are fun.";
// |page − CLI| for the same adapter and text (the bound; both run hearth-core's f32 kernels)
const NLL_TOLERANCE = 1e-4;
const MINUTE = 60_000;

mkdirSync(out, { recursive: true });
const server = await serve(dist, { "/models/tiny-llama/": fixture, "/models/tiny-qwen3/": join(repo, "tests/fixtures/tiny-qwen3") });
const browser = await launch();
const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};

/** Unpacks the page's stored zip into `dir`. */
function unzip(bytes, dir) {
  mkdirSync(dir, { recursive: true });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const names = [];
  while (view.getUint32(at, true) === 0x04034b50) {
    const size = view.getUint32(at + 18, true);
    const nameLen = view.getUint16(at + 26, true);
    const name = new TextDecoder().decode(bytes.subarray(at + 30, at + 30 + nameLen));
    writeFileSync(join(dir, name), bytes.subarray(at + 30 + nameLen, at + 30 + nameLen + size));
    names.push(name);
    at += 30 + nameLen + size;
  }
  return names;
}

const scoreOnPage = async (page) => {
  await page.evaluate(() => (document.querySelector("#try-section details").open = true));
  await page.fill("#score-text", SCORE_TEXT);
  await page.evaluate(() => delete document.getElementById("score-result").dataset.nll);
  await page.click("#score");
  await page.waitForFunction(() => document.getElementById("score-result").dataset.nll, null, { timeout: 2 * MINUTE });
  return Number(await page.getAttribute("#score-result", "data-nll"));
};

try {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  echo(page);
  page.on("dialog", (d) => d.accept());
  await page.goto(server.url);
  await page.waitForFunction(() => /^Ready on|could not|not available/.test(document.getElementById("status").textContent), null, { timeout: 2 * MINUTE });
  const ready = await page.textContent("#status");
  console.log(`status: ${ready}`);
  check(ready.startsWith("Ready on"), "the worker opened WebGPU");

  // 1. the model, from the served models/ folder (sharded safetensors + tokenizer files)
  await page.fill("#model-url", "models/tiny-llama/");
  await page.click("#load-url");
  await page.waitForFunction(() => /Model loaded|Could not/.test(document.getElementById("status").textContent), null, { timeout: 2 * MINUTE });
  console.log(`model: ${await page.textContent("#model-info")}`);
  check((await page.textContent("#status")).startsWith("Model loaded"), "the model loaded from models/tiny-llama/");

  // 2. data and template preview
  await page.fill("#data", DATA);
  await page.waitForFunction(() => document.querySelectorAll("#data-table tr").length >= 5 && document.querySelector("#preview .tok.loss"), null, { timeout: MINUTE });
  check((await page.locator("#data-table tr").count()) === 6, "the table shows the 4 records (+ header and add row)");
  check((await page.locator("#preview .tok.loss").count()) > 0 && (await page.locator("#preview .tok:not(.loss)").count()) > 0, "the preview marks which tokens carry loss");
  // more records than the table shows: it says how many of how many
  await page.fill("#data", DATA.trim().split("\n")[0].concat("\n").repeat(205));
  await page.waitForFunction(() => /first 200 of 205/.test(document.getElementById("data-shown").textContent), null, { timeout: MINUTE });
  check((await page.locator("#data-table tr").count()) === 202, "a table of 205 records shows 200 and says so");
  await page.fill("#data", DATA);
  await page.waitForFunction(() => document.querySelectorAll("#data-table tr").length === 6 && !document.getElementById("data-shown").textContent, null, { timeout: MINUTE });

  // 3. settings: the form has a field for every setting of hearth-core's schema (the CLI's
  // flags come from it too), but the two the page has its own controls for
  const fields = await page.evaluate(() => [window.hearth.schema.length, document.querySelectorAll("#settings input, #settings select").length]);
  check(fields[0] > 20 && fields[1] === fields[0] - 2 && (await page.locator("#set-beta2").count()) === 1 && (await page.locator("#set-objective").count()) === 1, `the settings form comes from the schema (${fields[1]} fields)`);
  // a short, fast run with a held-out example
  for (const [key, value] of Object.entries({ max_steps: "8", lr: "0.01", dropout: "0", val_split: "0.25", eval_steps: "2", batch_size: "4", r: "8", alpha: "16" })) {
    await page.fill(`#set-${key}`, value);
  }
  await page.fill("#save-steps", "4");
  // a budget far too small for the run: the page warns before it starts
  await page.fill("#set-memory_budget_gb", "0.0001");
  await page.waitForSelector("#memory-warning:not([hidden])", { timeout: MINUTE });
  check((await page.textContent("#memory-warning")).includes("lower the batch size"), "a run that would not fit is warned about");
  await page.fill("#set-memory_budget_gb", "4");
  await page.waitForSelector("#memory-warning", { state: "hidden", timeout: MINUTE });
  await page.waitForFunction(() => document.querySelectorAll("#memory rect.mem").length > 0 && document.querySelectorAll("#lora-shapes figure").length === 7, null, { timeout: MINUTE });
  check(true, "the memory estimate and the 7 LoRA shapes are drawn");

  // 4. train, pausing on the way: no step runs while paused
  await page.click("#train");
  await page.waitForFunction(() => window.hearth.metrics.some((m) => m.step >= 2), null, { timeout: 4 * MINUTE });
  check((await page.locator("#set-lr").isDisabled()) && !(await page.locator("#settings-locked").isHidden()), "the settings are locked while the run is active, and the page says so");
  await page.click("#pause");
  await page.waitForTimeout(2000); // the step in flight finishes
  const stepsWhenPaused = await page.evaluate(() => window.hearth.metrics.length);
  await page.waitForTimeout(2000);
  check((await page.evaluate(() => window.hearth.metrics.length)) === stepsWhenPaused, `no step ran while paused (${stepsWhenPaused} metrics)`);
  await page.click("#pause"); // now "Resume"
  await page.waitForFunction(() => window.hearth.finished || /Training stopped|Could not/.test(document.getElementById("status").textContent), null, { timeout: 8 * MINUTE });
  console.log(`status: ${await page.textContent("#status")}`);
  const { metrics, finished } = await page.evaluate(() => ({ metrics: window.hearth.metrics, finished: window.hearth.finished }));
  const losses = metrics.filter((m) => m.loss !== undefined).map((m) => m.loss);
  console.log(`losses: ${losses.map((l) => l.toFixed(4)).join(" ")}; validation: ${metrics.filter((m) => m.val_loss !== undefined).map((m) => m.val_loss.toFixed(4)).join(" ")}`);
  check(finished && finished.step === 8, "the run finished its 8 steps");
  check(!(await page.locator("#set-lr").isDisabled()) && (await page.locator("#settings-locked").isHidden()), "the settings are unlocked when the run ends");
  check((await page.locator("#loss-chart circle.point.train").count()) === 8, "the loss chart has 8 train points");
  check((await page.locator("#loss-chart circle.point.val").count()) >= 4, "the loss chart has validation points");
  check(losses.length === 8 && losses[7] < losses[0], "the loss fell");
  if (finished) console.log(`browser training speed: ${finished.tokens_per_s.toFixed(1)} tokens/s`);

  // 5. side-by-side chat
  await page.fill("#prompt", "Hello world, ");
  await page.click("#send");
  await page.waitForFunction(() => document.querySelectorAll(".log p.assistant[data-done]").length === 2, null, { timeout: 2 * MINUTE });
  const answers = await page.locator(".log p.assistant").allTextContents();
  console.log(`answers: base ${JSON.stringify(answers[0])}, fine-tuned ${JSON.stringify(answers[1])}`);
  check(answers.every((a) => !a.startsWith("(")), "both models answered");

  // 6. score, download, and the CLI's score with the downloaded adapter
  const nll = await scoreOnPage(page);
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download-adapter")]);
  const zipPath = join(out, "hearth-adapter.zip");
  await download.saveAs(zipPath);
  const adapterDir = join(out, "adapter");
  rmSync(adapterDir, { recursive: true, force: true });
  const names = unzip(readFileSync(zipPath), adapterDir);
  check(names.includes("adapter_config.json") && names.includes("adapter_model.safetensors"), `the zip holds the PEFT files (${names.join(", ")})`);
  const cli = JSON.parse(execFileSync(hearth, ["score", fixture, "--adapter", adapterDir, "--text", SCORE_TEXT, "--json"], { encoding: "utf8" }));
  console.log(`mean NLL: page ${nll}, hearth score ${cli.mean_nll} (|diff| ${Math.abs(nll - cli.mean_nll).toExponential(2)})`);
  check(Math.abs(nll - cli.mean_nll) <= NLL_TOLERANCE, `hearth score --adapter matches the page within ${NLL_TOLERANCE}`);
  await page.screenshot({ path: join(out, "webapp.png"), fullPage: true });

  // 7. reload: the saved run is offered; resuming it brings the same adapter back
  await page.reload();
  await page.waitForFunction(() => !document.getElementById("resume-banner").hidden, null, { timeout: 2 * MINUTE });
  console.log(`banner: ${await page.textContent("#resume-text")}`);
  await page.click("#resume-run");
  await page.waitForFunction(() => window.hearth.finished || /stopped|Could not/.test(document.getElementById("status").textContent), null, { timeout: 4 * MINUTE });
  check((await page.locator("#loss-chart circle.point.train").count()) === 8, "the resumed run shows the saved loss chart");
  const nllAfter = await scoreOnPage(page);
  check(Math.abs(nllAfter - nll) <= 1e-6, `the resumed run scores as before the reload (${nllAfter})`);

  // 8. early stopping (the run engine's): evaluated after every step at a learning rate that
  // overshoots, the run stops once the validation loss rises and keeps the best adapter
  const runTo = async (fields) => {
    for (const [key, value] of Object.entries(fields)) await page.fill(`#set-${key}`, value);
    await page.evaluate(() => (window.hearth.finished = null));
    await page.click("#train");
    await page.waitForFunction(() => window.hearth.finished || /Training stopped|Could not/.test(document.getElementById("status").textContent), null, { timeout: 4 * MINUTE });
    const status = await page.textContent("#status");
    console.log(`status: ${status}`);
    return { status, finished: await page.evaluate(() => window.hearth.finished), metrics: await page.evaluate(() => window.hearth.metrics) };
  };
  const early = await runTo({ max_steps: "8", lr: "0.5", eval_steps: "1", patience: "1" });
  const vals = early.metrics.filter((m) => m.val_loss !== undefined).map((m) => m.val_loss);
  console.log(`early stopping: validation ${vals.map((l) => l.toFixed(4)).join(" ")}`);
  check(early.finished?.early_stopped && early.finished.step < 8, "the run stopped early");
  check(early.status.includes("Stopped early") && early.status.includes("best validation loss"), "the page says it stopped early with the best adapter");
  check(vals.length >= 2 && vals[vals.length - 1] > Math.min(...vals), "it stopped after the validation loss rose");

  // 9. divergence: a learning rate of 1e30 makes the loss infinite; the run stops and says so
  const nan = await runTo({ max_steps: "6", lr: "1e30", patience: "0" });
  check(!nan.finished && nan.status.includes("training diverged at step"), "a diverged run stops with a message");

  // 10. another family: the tiny Qwen3 loads, the page names its features, and it trains
  await page.fill("#model-url", "models/tiny-qwen3/");
  await page.click("#load-url");
  await page.waitForFunction(() => /Model loaded|Could not/.test(document.getElementById("status").textContent), null, { timeout: 2 * MINUTE });
  const qwenInfo = await page.textContent("#model-info");
  console.log(`model: ${qwenInfo}`);
  check(qwenInfo.includes("qwen3") && qwenInfo.includes("per-head q/k norms") && qwenInfo.includes("tied embeddings"), "the page names Qwen3 and its features");
  const qwen = await runTo({ max_steps: "4", lr: "0.01", eval_steps: "2", patience: "0" });
  const qwenLosses = qwen.metrics.filter((m) => m.loss !== undefined).map((m) => m.loss);
  console.log(`qwen3 losses: ${qwenLosses.map((l) => l.toFixed(4)).join(" ")}`);
  check(qwen.finished?.step === 4 && qwenLosses.length === 4 && qwenLosses[3] < qwenLosses[0], "the tiny Qwen3 trained 4 steps and its loss fell");

  // 11. preference tuning (DPO) on the bundled pairs: the table shows chosen and rejected
  // side by side, and the reward margin grows from 0 (the adapter starts as the reference)
  await page.click("#use-preference-example");
  await page.waitForFunction(() => /pairs/.test(document.getElementById("data-info").textContent), null, { timeout: MINUTE });
  const headers = await page.locator("#data-table th").allTextContents();
  check(headers.includes("chosen") && headers.includes("rejected") && (await page.inputValue("#set-objective")) === "dpo", `the preference example shows chosen and rejected side by side, objective dpo (${headers.join(", ")})`);
  check((await page.locator("#preview strong.part").count()) === 2, "the preview shows a pair's chosen and rejected sequences");
  const dpo = await runTo({ max_steps: "4", lr: "0.01", eval_steps: "2", patience: "0", batch_size: "2" });
  const margins = dpo.metrics.filter((m) => m.margin !== undefined).map((m) => m.margin);
  console.log(`dpo: losses ${dpo.metrics.filter((m) => m.loss !== undefined).map((m) => m.loss.toFixed(4)).join(" ")}; margins ${margins.map((x) => x.toFixed(4)).join(" ")}`);
  check(dpo.finished?.step === 4 && margins.length === 4 && margins[0] === 0 && margins[3] > margins[0], "four DPO steps, and the reward margin grew");
  check(!(await page.locator("#reward-chart").isHidden()) && (await page.locator("#reward-chart circle.point.train").count()) === 4, "the reward chart shows the margin per step");
  check(/margin [-0-9.]+, accuracy \d+ %/.test(await page.locator("#reward-chart svg").getAttribute("aria-label")), "the reward chart says its latest values in words");
  check(/reward margin/.test(await page.textContent("#train-status")), "the status line shows the reward margin");
  await page.screenshot({ path: join(out, "webapp-dpo.png"), fullPage: true });

  // 12. no WebGPU: a page that says what works
  const bare = await context.newPage();
  await bare.addInitScript(() => delete Navigator.prototype.gpu);
  await bare.goto(server.url);
  await bare.waitForSelector("#no-webgpu:not([hidden])", { timeout: MINUTE });
  check((await bare.textContent("#no-webgpu")).includes("Chrome"), "a browser without WebGPU gets the help page");
} finally {
  await browser.close();
  server.close();
}
if (failures.length) {
  console.error(`FAILED: ${failures.join("; ")}`);
  process.exit(1);
}
console.log("web app test passed");
