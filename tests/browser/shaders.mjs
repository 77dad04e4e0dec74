// Every kernel the page may run, compiled by the browser's own WGSL compiler (Tint, in
// headless Chromium on SwiftShader): what naga accepts natively, Tint may reject (a constant
// expression that evaluates to −∞ is one), and the page's test runs only the kernels its tiny
// model and SwiftShader pick. Usage: node shaders.mjs <the composed shaders' folder, core's
// OUT_DIR/shaders>. The subgroup and cooperative-matrix variants are native only (wgpu passes
// neither through to the browser); the f16 ones are compiled where the adapter has shader-f16.
import { launch } from "./chromium.mjs";
import { readFileSync, readdirSync } from "node:fs";
import { createServer } from "node:http";

const dir = process.argv[2];
const nativeOnly = (name) => name.includes("_subgroups") || name.includes("_coop");
const shaders = readdirSync(dir)
  .filter((name) => name.endsWith(".wgsl") && !nativeOnly(name))
  .sort()
  .map((name) => ({ name, code: readFileSync(`${dir}/${name}`, "utf8") }));
// (WebGPU needs a secure context: a page from localhost)
const server = createServer((_, res) => res.end("<!doctype html><title>shaders</title>")).listen(0);
const browser = await launch();
let failed = 0;
try {
  const page = await browser.newPage();
  await page.goto(`http://localhost:${server.address().port}/`);
  const results = await page.evaluate(async (shaders) => {
    const adapter = await navigator.gpu.requestAdapter();
    const f16 = adapter.features.has("shader-f16");
    const limits = ["maxComputeWorkgroupStorageSize", "maxStorageBuffersPerShaderStage", "maxComputeInvocationsPerWorkgroup"];
    const device = await adapter.requestDevice({
      requiredFeatures: f16 ? ["shader-f16"] : [],
      requiredLimits: Object.fromEntries(limits.map((l) => [l, adapter.limits[l]])),
    });
    const out = [];
    for (const { name, code } of shaders) {
      if (!f16 && /^enable f16;/m.test(code)) {
        out.push({ name, skipped: "the adapter has no shader-f16" });
        continue;
      }
      const module = device.createShaderModule({ code });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === "error").map((m) => `line ${m.lineNum}: ${m.message}`);
      const entries = [...code.matchAll(/@compute[^\n]*\n\s*fn\s+(\w+)/g)].map((m) => m[1]);
      for (const entryPoint of errors.length ? [] : entries) {
        try {
          await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint } });
        } catch (e) {
          errors.push(`${entryPoint}: ${String(e.message).split("\n")[0]}`);
        }
      }
      out.push({ name, entries: entries.length, errors });
    }
    return out;
  }, shaders);
  for (const r of results) {
    if (r.skipped) console.log(`skip ${r.name}: ${r.skipped}`);
    else if (r.errors.length) {
      failed++;
      console.log(`FAIL ${r.name}:\n  ${r.errors.join("\n  ")}`);
    } else console.log(`ok   ${r.name} (${r.entries} entry points)`);
  }
  console.log(`${results.length - failed} of ${results.length} kernel files compile in the browser (${failed} failed)`);
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
