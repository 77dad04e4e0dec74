// Every kernel the page may run, the f16 ones included, compiled by Tint as Dawn for Node (npm's
// webgpu) builds it, on an adapter with shader-f16: Chromium's SwiftShader has none
// (shaders.mjs skips those files there), lavapipe from Mesa 26.1 has, and Dawn takes it (it
// refuses Debian 12's, which lacks dynamic indexing of uniform arrays). tests/coop/run.sh runs
// this in its Debian 13 chroot. Fails where the adapter has no shader-f16: a check that skips
// proves nothing. Usage: node shaders_dawn.mjs <the composed shaders' folder>.
import { create, globals } from "webgpu";
import { compileAll, pageShaders, report } from "./compile_shaders.mjs";

Object.assign(globalThis, globals);
const { f16, results } = await compileAll(create(["backend=vulkan"]), pageShaders(process.argv[2]));
const failed = report(results, "in Dawn's Tint");
if (!f16) console.log("the adapter has no shader-f16: the f16 kernels were not compiled");
process.exit(failed || !f16 ? 1 : 0);
