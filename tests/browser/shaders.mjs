// Every kernel the page may run, compiled by the browser's own WGSL compiler (Tint, in
// headless Chromium on SwiftShader; compile_shaders.mjs says why). SwiftShader has no
// shader-f16, so the f16 files are skipped here: shaders_dawn.mjs compiles them (Dawn's Tint
// on lavapipe 26.1, in tests/coop's chroot). Usage: node shaders.mjs <the composed shaders'
// folder, core's OUT_DIR/shaders>.
import { launch } from "./chromium.mjs";
import { compileAll, pageShaders, report } from "./compile_shaders.mjs";
import { createServer } from "node:http";

const shaders = pageShaders(process.argv[2]);
// (WebGPU needs a secure context: a page from localhost)
const server = createServer((_, res) => res.end("<!doctype html><title>shaders</title>")).listen(0);
const browser = await launch();
let failed = 0;
try {
  const page = await browser.newPage();
  await page.goto(`http://localhost:${server.address().port}/`);
  // compileAll's own source, run in the page on its navigator.gpu
  const { results } = await page.evaluate(
    ({ source, shaders }) => new Function(`return ${source}`)()(navigator.gpu, shaders),
    { source: compileAll.toString(), shaders },
  );
  failed = report(results, "in the browser");
} finally {
  await browser.close();
  server.close();
}
process.exit(failed ? 1 : 0);
