// Compiles kernel files with a WebGPU implementation's own WGSL compiler (Tint): shaders.mjs
// in headless Chromium, shaders_dawn.mjs in Dawn for Node. What naga accepts natively, Tint
// may reject (a constant expression that evaluates to −∞ is one), and the page's test runs
// only the kernels its tiny model and adapter pick.
import { readFileSync, readdirSync } from "node:fs";

/** The page's kernel files in `dir` (core's OUT_DIR/shaders, composed): the subgroup and
 * cooperative-matrix variants are native only (wgpu passes neither through to the browser). */
export function pageShaders(dir) {
  const nativeOnly = (name) => name.includes("_subgroups") || name.includes("_coop");
  return readdirSync(dir)
    .filter((name) => name.endsWith(".wgsl") && !nativeOnly(name))
    .sort()
    .map((name) => ({ name, code: readFileSync(`${dir}/${name}`, "utf8") }));
}

/** Each shader compiled on a device of `gpu` (a `navigator.gpu`) with the adapter's largest
 * limits and shader-f16 where it has it, each entry point's pipeline created: [{ name,
 * entries, errors } or { name, skipped }], and whether the adapter had shader-f16. Self-contained
 * (no closure): shaders.mjs runs its source inside the page. */
export async function compileAll(gpu, shaders) {
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error("no WebGPU adapter");
  const f16 = adapter.features.has("shader-f16");
  const limits = ["maxComputeWorkgroupStorageSize", "maxStorageBuffersPerShaderStage", "maxComputeInvocationsPerWorkgroup"];
  const device = await adapter.requestDevice({
    requiredFeatures: f16 ? ["shader-f16"] : [],
    requiredLimits: Object.fromEntries(limits.map((l) => [l, adapter.limits[l]])),
  });
  const results = [];
  for (const { name, code } of shaders) {
    if (!f16 && /^enable f16;/m.test(code)) {
      results.push({ name, skipped: "the adapter has no shader-f16" });
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
    results.push({ name, entries: entries.length, errors });
  }
  device.destroy();
  return { f16, results };
}

/** Prints each file's outcome and a closing line naming `where`; the number that failed. */
export function report(results, where) {
  let failed = 0;
  for (const r of results) {
    if (r.skipped) console.log(`skip ${r.name}: ${r.skipped}`);
    else if (r.errors.length) {
      failed++;
      console.log(`FAIL ${r.name}:\n  ${r.errors.join("\n  ")}`);
    } else console.log(`ok   ${r.name} (${r.entries} entry points)`);
  }
  const skipped = results.filter((r) => r.skipped).length;
  console.log(`${results.length - failed - skipped} of ${results.length} kernel files compile ${where} (${failed} failed, ${skipped} skipped)`);
  return failed;
}
