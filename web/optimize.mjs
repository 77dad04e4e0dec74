// Trunk's post-build hook (Trunk.toml): in a release build, shrinks the wasm with binaryen's
// wasm-opt. npm's binaryen, because Debian's older one rejects the module's features; the
// features listed are the ones rustc's wasm32 target turns on by default.
import { execFileSync } from "node:child_process";
import { existsSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";

const FEATURES = ["--enable-bulk-memory", "--enable-nontrapping-float-to-int", "--enable-sign-ext", "--enable-mutable-globals", "--enable-reference-types", "--enable-multivalue"];

if (process.env.TRUNK_PROFILE === "release") {
  const wasm = join(process.env.TRUNK_STAGING_DIR, "hearth-web_bg.wasm");
  const tool = join(import.meta.dirname, "node_modules/.bin/wasm-opt");
  if (!existsSync(tool)) {
    console.error("web/optimize.mjs: binaryen's wasm-opt is missing: run `npm ci --prefix web` once (README, \"Web\")");
    process.exit(1);
  }
  const before = statSync(wasm).size;
  execFileSync(tool, ["-Oz", ...FEATURES, wasm, "-o", `${wasm}.opt`], { stdio: "inherit" });
  renameSync(`${wasm}.opt`, wasm);
  console.log(`wasm-opt -Oz: ${(before / 2 ** 20).toFixed(2)} MiB -> ${(statSync(wasm).size / 2 ** 20).toFixed(2)} MiB`);
}
