// Hearth's GGUF files in llama.cpp itself (npm's node-llama-cpp, its prebuilt CPU build):
// for the tiny fixtures (merged with PEFT's trained adapters) and SmolLM2, written as f16 and
// q8_0 by `hearth merge/export --format gguf`, llama.cpp must
//   - tokenize a multilingual text into Hearth's ids (`hearth tokenize`), and
//   - continue each prompt greedily with Hearth's ids (`hearth generate --json`; 12 tokens,
//     up to an end-of-generation token, which Hearth leaves out): all of them for f16; the
//     first for q8_0, where ggml's CPU dot products quantize the activations to 8 bits too
//     (Hearth multiplies f32 activations by the dequantized weights), so later tokens may
//     part at a near tie (the tiny random models are full of them; SmolLM2 parts after 3
//     tokens on one prompt);
//   - with the base as GGUF and the adapter as an adapter GGUF (`hearth export-adapter`,
//     llama.cpp's --lora), continue each prompt as the merged f16 model does.
//
// Usage: node check.mjs HEARTH_BINARY OUT_DIR [SMOLLM2_GGUF]
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { getLlama } from "node-llama-cpp";

const [hearth, out, smollm2] = process.argv.slice(2);
const repo = resolve(import.meta.dirname, "../..");
const fixture = (name) => join(repo, "tests/fixtures", name);
const TEXT = "Hello world! 你好，世界。Grüße aus Köln, café 🙂 12345 — tiny models.";
const PROMPTS = ["Hello world, tiny", "The quick brown fox"];
const NEW_TOKENS = 12;

mkdirSync(out, { recursive: true });
const run = (args) => execFileSync(hearth, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

// (name, how the GGUF is made): merged with PEFT's trained adapter, or exported as it is.
// general.name is set: llama.cpp expects Phi-3's SentencePiece tokens (</s>, <unk>) in any
// model whose name holds "phi3", which the tiny one's byte-level vocabulary lacks.
const NAME = ["--name", "hearth-tiny"];
// llama.cpp leaves Phi-3's sliding window out ("Phi SWA is currently disabled"), so past the
// window (8 tokens in the tiny one; 2047 in Phi-3 mini) it attends further back than
// transformers and Hearth: its tokens are compared only while the context fits the window.
const WINDOW = { "tiny-phi3": 8 };
const SHORT_PROMPTS = ["Hi", "The fox"];
const windowOf = (file) => Object.entries(WINDOW).find(([name]) => file.includes(`/${name}.`))?.[1];
const models = [
  ["tiny-llama", "merge"],
  ["tiny-qwen2", "merge"],
  ["tiny-qwen3", "merge"],
  ["tiny-smollm3", "merge"],
  ["tiny-phi3", "merge"],
  ["tiny-gemma3-p6", "export"],
  ["tiny-mistral", "export"], // a SentencePiece-style tokenizer ("llama" in GGUF)
];
const files = [];
const adapters = []; // [base f16 GGUF, adapter GGUF, merged f16 GGUF]
for (const [name, how] of models) {
  if (how === "merge") {
    const base = join(out, `${name}.base.f16.gguf`);
    const lora = join(out, `${name}.lora.gguf`);
    run(["export", fixture(name), "--out", base, "--format", "gguf", "--dtype", "f16", ...NAME]);
    run(["export-adapter", fixture(name), "--adapter", fixture(`peft/${name}/trained`), "--out", lora]);
    adapters.push([base, lora, join(out, `${name}.f16.gguf`)]);
  }
  for (const dtype of ["f16", "q8_0"]) {
    const file = join(out, `${name}.${dtype}.gguf`);
    const adapter = how === "merge" ? ["--adapter", fixture(`peft/${name}/trained`)] : [];
    run([how, fixture(name), ...adapter, "--out", file, "--format", "gguf", "--dtype", dtype, ...NAME]);
    files.push(file);
  }
}
if (smollm2) {
  const file = join(out, "smollm2.q8_0.gguf");
  run(["export", smollm2, "--out", file, "--format", "gguf", "--dtype", "q8_0"]);
  files.push(file);
}

const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const failures = [];
const hearthGreedy = new Map(); // "file\nprompt" -> ids
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};
for (const file of files) {
  const model = await llama.loadModel({ modelPath: file });
  const ours = JSON.parse(run(["tokenize", file, "--text", TEXT, "--json"])).ids;
  const theirs = Array.from(model.tokenize(TEXT));
  check(JSON.stringify(ours) === JSON.stringify(theirs), `${file}: tokenization (${ours.length} tokens)`);
  const context = await model.createContext({ contextSize: 128 });
  for (const prompt of windowOf(file) ? SHORT_PROMPTS : PROMPTS) {
    const hearthIds = JSON.parse(run(["generate", file, "--prompt", prompt, "--max-new-tokens", String(NEW_TOKENS), "--json"])).ids;
    hearthGreedy.set(`${file}\n${prompt}`, hearthIds);
    const sequence = context.getSequence();
    // the prompt as Hearth tokenizes it for generation (BOS where the tokenizer adds one)
    const prompted = JSON.parse(run(["tokenize", file, "--text", prompt, "--special", "--json"])).ids;
    const llamaIds = [];
    for await (const token of sequence.evaluate(prompted, { temperature: 0 })) {
      if (model.isEogToken(token)) break;
      llamaIds.push(token);
      if (llamaIds.length >= NEW_TOKENS) break;
    }
    sequence.dispose();
    const window = windowOf(file);
    const inWindow = window ? window - prompted.length + 1 : NEW_TOKENS;
    const compared = file.includes(".q8_0.") ? 1 : Math.min(NEW_TOKENS, inWindow);
    const same = JSON.stringify(hearthIds.slice(0, compared)) === JSON.stringify(llamaIds.slice(0, compared));
    const what = compared === 1 ? "first token" : compared < NEW_TOKENS ? `the ${compared} tokens inside the sliding window` : "every token";
    check(same && compared > 0 && (compared < NEW_TOKENS || hearthIds.length === llamaIds.length), `${file}: greedy continuation of ${JSON.stringify(prompt)}, ${what} (${JSON.stringify(hearthIds)} vs ${JSON.stringify(llamaIds)})`);
  }
  await context.dispose();
  await model.dispose();
}
// greedy ids of `prompt` in llama.cpp, with `lora` applied when given
async function llamaGreedy(file, lora, prompt) {
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({ contextSize: 128, ...(lora ? { lora: { adapters: [{ filePath: lora }] } } : {}) });
  const prompted = JSON.parse(run(["tokenize", file, "--text", prompt, "--special", "--json"])).ids;
  const ids = [];
  for await (const token of context.getSequence().evaluate(prompted, { temperature: 0 })) {
    if (model.isEogToken(token)) break;
    ids.push(token);
    if (ids.length >= NEW_TOKENS) break;
  }
  await context.dispose();
  await model.dispose();
  return ids;
}
for (const [base, lora, merged] of adapters) {
  let changed = false;
  for (const prompt of windowOf(merged) ? SHORT_PROMPTS : PROMPTS) {
    const window = windowOf(merged);
    const prompted = JSON.parse(run(["tokenize", merged, "--text", prompt, "--special", "--json"])).ids;
    const n = window ? window - prompted.length + 1 : NEW_TOKENS;
    const want = hearthGreedy.get(`${merged}\n${prompt}`);
    const got = await llamaGreedy(base, lora, prompt);
    const same = n < NEW_TOKENS ? n > 0 && JSON.stringify(got.slice(0, n)) === JSON.stringify(want.slice(0, n)) : JSON.stringify(got) === JSON.stringify(want);
    check(same, `${lora} on ${base}: continuation of ${JSON.stringify(prompt)} as the merged model's${n < NEW_TOKENS ? ` (inside the window: ${n} tokens)` : ""} (${JSON.stringify(got)} vs ${JSON.stringify(want)})`);
    changed ||= JSON.stringify(await llamaGreedy(base, null, prompt)) !== JSON.stringify(want);
  }
  check(changed, `${lora}: the adapter changes what the base continues`);
}
if (failures.length) {
  console.error(`FAILED: ${failures.length} check(s)`);
  process.exit(1);
}
console.log(`llama.cpp check passed (${files.length} files, ${adapters.length} adapters)`);
