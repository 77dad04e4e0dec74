// The page: forms, tables and pictures. Every computation goes to the worker (worker.js),
// which runs hearth-core on WebGPU; this thread only draws, so it never freezes.

import { lossChart, rewardChart, memoryBar, loraShapes, tokenLosses, layerMap, measuredMemory, mib } from "./draw.js";
import { zip } from "./zip.js";

const $ = (id) => document.getElementById(id);
const state = { defaults: null, model: null, metrics: [], totalSteps: 0, training: false, tuned: false, lastScore: null, tokensPerS: null };
// Read by the browser test and handy in the console.
window.hearth = state;

function say(text, kind = "") {
  $("status").textContent = text;
  $("status").className = kind;
}

function noWebGpu(reason) {
  $("no-webgpu").hidden = false;
  $("no-webgpu-reason").textContent = reason;
  $("app").hidden = true;
  say("WebGPU is not available here.", "error");
}

// --- the worker -------------------------------------------------------------------------

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
let nextId = 1;
const pending = new Map();
const textSinks = new Map();

function call(op, fields = {}) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...fields });
  });
}

// The loss chart, and for preference tuning the reward margin and accuracy next to it.
function drawCharts() {
  lossChart($("loss-chart"), state.metrics, state.totalSteps);
  const preference = state.metrics.some((m) => m.margin !== undefined);
  $("reward-chart").hidden = !preference;
  if (preference) rewardChart($("reward-chart"), state.metrics, state.totalSteps);
}

const handlers = {
  download({ file, index, count, done, total }) {
    state.downloads = (state.downloads ?? 0) + 1;
    $("download").hidden = false;
    $("download").value = total ? (index + done / total) / count : index / count;
    $("download-text").textContent = `Downloading ${file} (${index + 1} of ${count})${total ? `: ${mib(done)} of ${mib(total)}` : ""}`;
  },
  status: ({ text }) => say(text),
  preparing() {
    state.preparedKernels = (state.preparedKernels ?? 0) + 1;
    $("train-status").textContent = "Preparing the GPU kernels: the first step's time and the ETA do not include this.";
  },
  model: ({ info }) => showModel(info),
  started({ info, metrics, settings, data }) {
    // a resumed run brings back its own settings and data
    for (const f of formFields()) setField(f, settings[f.name] ?? state.defaults[f.name]);
    $("data").value = data;
    state.metrics = metrics;
    state.earlyStop = null;
    state.totalSteps = info.total_steps;
    $("train-status").textContent = `${info.trainable}. ${info.total_steps} steps (${info.steps_per_epoch} per epoch, warmup ${info.warmup}), micro-batches of ≤ ${info.max_tokens} tokens, gradient checkpointing ${info.checkpointing ? "on" : "off"}${info.step ? `; resumed at step ${info.step}` : ""}.`;
    drawCharts();
  },
  step(m) {
    const { step, epoch, loss, lr, grad_norm, margin, accuracy } = m;
    state.metrics.push({ step, epoch, loss, lr, grad_norm, ...(margin !== undefined && { margin, accuracy }) });
    state.tokensPerS = m.tokens_per_s;
    $("train-progress").value = m.step / m.total_steps;
    const rewards = margin !== undefined ? ` · reward margin ${margin.toFixed(3)} · accuracy ${(100 * accuracy).toFixed(0)} %` : "";
    $("train-status").textContent = `step ${m.step} of ${m.total_steps} · epoch ${m.epoch.toFixed(2)} · loss ${m.loss.toFixed(4)}${rewards} · lr ${m.lr.toExponential(2)} · ${m.tokens_per_s.toFixed(1)} tokens/s · ETA ${eta(m.eta_s)}`;
    drawCharts();
  },
  eval(e) {
    state.metrics.push({ step: e.step, val_loss: e.loss });
    drawCharts();
  },
  checkpoint: ({ step }) => (state.checkpoint = step),
  early_stop({ step, evals_since_best }) {
    state.earlyStop = { step, evals_since_best };
  },
  finished({ step, stopped, early_stopped, tokens_per_s }) {
    setTraining(false);
    state.tuned = true;
    state.downloaded = false;
    $("train").textContent = "New run";
    $("continue").hidden = false;
    state.finished = { step, stopped, early_stopped, tokens_per_s };
    $("download-adapter").disabled = false;
    $("resume-banner").hidden = true;
    const how = early_stopped
      ? `Stopped early at step ${step}: no lower validation loss in ${state.earlyStop?.evals_since_best ?? "several"} evaluation(s); the adapter is the one with the best validation loss`
      : `${stopped ? "Stopped" : "Finished"} at step ${step}`;
    say(`${how} (${tokens_per_s.toFixed(1)} tokens/s). The adapter is saved in this browser; try it below or download it.`, "ok");
    showTokenLosses();
  },
  failed({ error, checkpoint }) {
    setTraining(false);
    say(`Training stopped: ${error}${checkpoint ? ` The checkpoint of step ${checkpoint} is kept.` : ""}`, "error");
    if (checkpoint) {
      $("resume-text").textContent = `Resume from the checkpoint of step ${checkpoint} (after lowering what the message names, if it was memory)?`;
      $("resume-banner").hidden = false;
      state.resumeWithForm = true;
    }
  },
  norms({ step, norms }) {
    state.norms = { step, ...norms };
    layerMap($("layer-map"), norms, step);
  },
  memory(m) {
    state.measured = m;
    measuredMemory($("memory-measured"), m, state.estimate);
  },
  text({ stream, piece }) {
    textSinks.get(stream)?.(piece);
  },
};

worker.onmessage = ({ data }) => {
  if (data.event) return handlers[data.event]?.(data);
  const p = pending.get(data.id);
  pending.delete(data.id);
  if (data.error !== undefined) p.reject(new Error(data.error));
  else p.resolve(data.result);
};
worker.onerror = (e) => say(`The worker failed: ${e.message}`, "error");

const eta = (s) => (s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);

// --- model ----------------------------------------------------------------------------

function showModel(info) {
  state.model = info;
  $("download").hidden = true;
  $("download-text").textContent = "";
  $("model-info").textContent = `${info.origin}: ${info.architecture}${info.features.length ? ` (${info.features.join("; ")})` : ""}, ${info.layers} layers, hidden ${info.hidden_size}, ${info.heads} heads (${info.kv_heads} key/value), vocabulary ${info.vocab_size}, ${(info.params / 1e6).toFixed(1)} M parameters, weights ${info.format}; ${info.description}${info.chat_template ? "; has a chat template" : ""}.`;
  if (info.qlora_only) $("set-method").value = "qlora";
  say(info.qlora_only
    ? "Model loaded in NF4: its weights would not fit this tab's memory as they are, so it trains with QLoRA. Add data, check the settings, and train."
    : "Model loaded. Add data, check the settings, and train.", "ok");
  refreshData();
}

async function loadModel(fields) {
  say("Loading the model…");
  // with QLoRA chosen, the weights are quantized as they load (a large model fits then)
  const s = settings();
  try {
    showModel(await call("load", { ...fields, quant: s.method === "qlora" ? s.qlora_format : null }));
  } catch (e) {
    $("download").hidden = true;
    say(`Could not load the model: ${e.message}`, "error");
  }
}

// One model of each family a laptop's tab can train: Hub id, family, parameters, download
// bytes (the safetensors, bf16).
const HUB_MODELS = [
  ["HuggingFaceTB/SmolLM2-135M-Instruct", "Llama (SmolLM2)", 135e6, 270e6],
  ["HuggingFaceTB/SmolLM2-360M-Instruct", "Llama (SmolLM2)", 362e6, 724e6],
  ["Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5", 494e6, 988e6],
  ["Qwen/Qwen3-0.6B", "Qwen3", 752e6, 1.5e9],
  ["unsloth/gemma-3-270m-it", "Gemma 3", 268e6, 536e6],
];
const size = (b) => (b >= 1e9 ? `${(b / 1e9).toFixed(1)} GB` : b >= 1e6 ? `${Math.round(b / 1e6)} MB` : `${Math.max(1, Math.round(b / 1e3))} kB`);

function modelButton(label, detail, load) {
  const li = document.createElement("li");
  const b = Object.assign(document.createElement("button"), { type: "button", className: "quiet", textContent: label });
  b.onclick = load;
  li.append(b, " ", Object.assign(document.createElement("span"), { className: "small", textContent: detail }));
  return li;
}

// The served models folder's list (hearth web makes models/index.json; a static host may
// carry one), then the Hub's.
async function listModels() {
  const served = await fetch("models/index.json").then((r) => (r.ok ? r.json() : [])).catch(() => []);
  $("served-models").replaceChildren(...served.map((m) => modelButton(m.name, `from this server, ${size(m.bytes)}`, () => loadModel({ url: m.path }))));
  $("served-models").hidden = !served.length;
  $("hub-models").replaceChildren(
    ...HUB_MODELS.map(([id, family, params, bytes]) =>
      modelButton(id.split("/")[1], `${family}, ${(params / 1e6).toFixed(0)} M parameters: download and weights on the GPU ≈ ${size(bytes)}`, () => loadModel({ url: id }))),
  );
}

$("url-form").onsubmit = (e) => {
  e.preventDefault();
  if ($("model-url").value.trim()) loadModel({ url: $("model-url").value });
  else say("Type a models/ folder, a .gguf address or a Hub id (or pick a ready model above).", "error");
};
// The file pickers are buttons (reachable by keyboard) that open their hidden inputs.
for (const b of document.querySelectorAll("button[data-picks]")) b.onclick = () => $(b.dataset.picks).click();
$("model-files").onchange = (e) => e.target.files.length && loadModel({ files: [...e.target.files] });
$("model-folder").onchange = (e) => e.target.files.length && loadModel({ files: [...e.target.files] });
$("drop").ondragover = (e) => {
  e.preventDefault();
  $("drop").classList.add("over");
};
$("drop").ondragleave = () => $("drop").classList.remove("over");
$("drop").ondrop = (e) => {
  e.preventDefault();
  $("drop").classList.remove("over");
  if (e.dataTransfer.files.length) loadModel({ files: [...e.dataTransfer.files] });
};

// --- data -----------------------------------------------------------------------------

const data = () => $("data").value;
let refreshTimer = null;

function refreshData() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    if (!state.model) return;
    await Promise.all([showData(), showPreview(), showEstimate()]);
  }, 250);
}

// The table's columns: the prompt first, a pair's chosen and rejected answers side by side,
// then any other fields.
const COLUMN_ORDER = ["instruction", "input", "prompt", "output", "completion", "chosen", "rejected", "messages", "text"];
function fieldsOf(records) {
  const keys = [];
  for (const r of records) for (const k of Object.keys(r)) if (!keys.includes(k)) keys.push(k);
  const rank = (k) => (COLUMN_ORDER.includes(k) ? COLUMN_ORDER.indexOf(k) : COLUMN_ORDER.length);
  return keys.sort((a, b) => rank(a) - rank(b));
}

async function showData() {
  if (!data().trim()) {
    $("data-info").textContent = "No data yet.";
    $("data-table").replaceChildren();
    $("data-shown").textContent = "";
    return;
  }
  try {
    const d = await call("inspect", { settings: settings(), data: data() });
    const s = d.train;
    $("data-info").textContent = `${d.records.length} records · train: ${s.examples} ${d.unit}, ${s.tokens} tokens (${s.loss_tokens} with loss), ${s.truncated} cut at ${settings().max_seq_len} tokens, ${s.dropped} dropped${d.validation ? ` · validation: ${d.validation.examples} ${d.unit}` : ""} · template ${d.template}`;
    $("data-info").className = "small";
    drawTable(d.records);
  } catch (e) {
    $("data-info").textContent = e.message;
    $("data-info").className = "small error";
  }
}

// The table edits the records in place; the text box stays the source of truth (JSONL).
function drawTable(records) {
  const keys = fieldsOf(records);
  const head = document.createElement("tr");
  head.append(...["#", ...keys].map((k) => Object.assign(document.createElement("th"), { textContent: k })));
  const SHOWN = 200;
  $("data-shown").textContent = records.length > SHOWN ? `The table shows the first ${SHOWN} of ${records.length} records; all of them are used.` : "";
  const rows = records.slice(0, SHOWN).map((r, i) => {
    const tr = document.createElement("tr");
    tr.append(Object.assign(document.createElement("td"), { textContent: i + 1 }));
    for (const k of keys) {
      const td = document.createElement("td");
      const v = r[k];
      td.textContent = typeof v === "string" ? v : v === undefined ? "" : JSON.stringify(v);
      td.contentEditable = typeof v === "string" || v === undefined ? "true" : "false";
      td.onblur = () => {
        if (td.textContent === (typeof v === "string" ? v : "")) return;
        records[i][k] = td.textContent;
        $("data").value = records.map((x) => JSON.stringify(x)).join("\n") + "\n";
        refreshData();
      };
      tr.append(td);
    }
    return tr;
  });
  const add = document.createElement("tr");
  const cell = Object.assign(document.createElement("td"), { colSpan: keys.length + 1 });
  const button = Object.assign(document.createElement("button"), { textContent: "add an example", className: "quiet" });
  button.onclick = () => {
    const blank = Object.fromEntries(keys.map((k) => [k, ""]));
    $("data").value = data().replace(/\s*$/, "\n") + JSON.stringify(blank) + "\n";
    refreshData();
  };
  cell.append(button);
  add.append(cell);
  $("data-table").replaceChildren(head, ...rows, add);
}

async function showPreview() {
  if (!data().trim()) return $("preview").replaceChildren();
  try {
    const p = await call("preview", { settings: settings(), data: data(), index: Math.max(0, $("preview-index").value - 1) });
    const spans = [];
    let part = "";
    for (const t of p.tokens) {
      // a preference record: its chosen sequence, then its rejected one, each labelled
      if (t.part && t.part !== part) {
        part = t.part;
        spans.push(Object.assign(document.createElement("strong"), { className: "part", textContent: `${part}: ` }));
      }
      spans.push(tokenSpan(t));
    }
    $("preview").replaceChildren(...spans);
  } catch (e) {
    $("preview").textContent = e.message;
  }
}

function tokenSpan(t) {
  const s = document.createElement("span");
  s.className = `tok${t.loss ? " loss" : ""}${t.cut ? " cut" : ""}`;
  s.textContent = t.text;
  s.title = `token ${t.id}${t.loss ? ", carries loss" : ""}${t.cut ? ", cut (beyond the max sequence length)" : ""}`;
  return s;
}

$("data").oninput = refreshData;
$("preview-index").oninput = refreshData;
$("use-example").onclick = async () => {
  $("data").value = await call("example");
  if ($("set-objective").value !== "sft") $("set-objective").value = "sft";
  refreshData();
};
$("use-preference-example").onclick = async () => {
  $("data").value = await call("preference_example");
  $("set-objective").value = "dpo";
  refreshData();
};
$("data-file").onchange = async (e) => {
  const f = e.target.files[0];
  if (f) {
    $("data").value = await f.text();
    refreshData();
  }
};
$("template-choice").onchange = () => {
  $("template-custom").hidden = $("template-choice").value !== "custom";
  refreshData();
};
$("template-custom").oninput = refreshData;

// --- settings ---------------------------------------------------------------------------

// The settings form comes from hearth-core's schema (the CLI's flags come from it too):
// a field per setting, with its label, help, range and default. The template and the
// checkpoint cadence have their own controls on the page.
const OWN_CONTROLS = ["template", "save_steps"];
const formFields = () => state.schema.filter((f) => !OWN_CONTROLS.includes(f.name));

function setField(f, value) {
  const input = $(`set-${f.name}`);
  if (f.kind === "bool") input.checked = !!value;
  else input.value = value;
}

function buildSettings(schema, defaults) {
  const form = $("settings");
  for (const f of formFields()) {
    const l = document.createElement("label");
    l.append(f.label);
    l.title = f.help;
    let input;
    if (f.kind === "choice") {
      input = document.createElement("select");
      for (const c of f.choices) input.append(new Option(c, c));
    } else {
      input = document.createElement("input");
      input.type = f.kind === "bool" ? "checkbox" : f.kind === "text" ? "text" : "number";
      if (f.kind === "float") input.step = "any";
      if (f.min !== undefined && f.min !== null) input.min = String(f.min);
      if (f.max !== undefined && f.max !== null) input.max = String(f.max);
    }
    input.id = `set-${f.name}`;
    input.oninput = refreshData;
    l.append(input);
    form.append(l);
    setField(f, defaults[f.name]);
  }
}

function settings() {
  const s = { ...state.defaults };
  for (const f of formFields()) {
    const input = $(`set-${f.name}`);
    s[f.name] = f.kind === "bool" ? input.checked : f.kind === "int" ? parseInt(input.value, 10) || 0 : f.kind === "float" ? Number(input.value) : input.value;
  }
  const choice = $("template-choice").value;
  s.template = choice === "custom" ? $("template-custom").value : choice;
  return s;
}

async function showEstimate() {
  try {
    const est = await call("estimate", { settings: settings(), data: data() });
    memoryBar($("memory"), est);
    memoryBar($("memory-split"), est);
    loraShapes($("lora-shapes"), est);
    $("memory-warning").hidden = !est.warning;
    $("memory-warning").textContent = est.warning ? `Warning: ${est.warning}.` : "";
    state.estimate = est;
  } catch (e) {
    $("memory-warning").hidden = false;
    $("memory-warning").textContent = e.message;
  }
}

// The f16 switch is the worker's GPU context's, not a run setting: it applies from the next
// launch, to training and generation alike.
$("f16-matmul").onchange = async () => {
  const box = $("f16-matmul");
  try {
    box.checked = await call("f16", { on: box.checked });
    say(box.checked ? "The forward matmuls and input gradients now run in f16 tiles, summed in f32." : "The matmuls are f32 again.", "ok");
  } catch (e) {
    box.checked = false;
    say(e.message, "error");
  }
};

// --- training ---------------------------------------------------------------------------

// While a run is active its settings are fixed: the form is locked and says so.
function setTraining(on) {
  state.training = on;
  $("train").disabled = on;
  $("pause").disabled = !on;
  $("stop").disabled = !on;
  $("pause").textContent = "Pause";
  for (const input of $("settings").querySelectorAll("input, select")) input.disabled = on;
  $("f16-matmul").disabled = on || !state.gpu.f16;
  $("settings-locked").hidden = !on;
}

// resume: from the saved checkpoint (current: with the page's settings, after a failure);
// continue: a new run from the adapter the last one ended with.
async function startTraining({ resume = false, current = false, continued = false } = {}) {
  setTraining(true);
  state.metrics = [];
  state.finished = null;
  say(resume && !continued ? "Resuming the saved run…" : continued ? "Continuing from the last adapter…" : "Preparing the run…");
  try {
    await call("train", { settings: settings(), data: data(), resume, current, continue: continued, saveSteps: Math.max(1, parseInt($("save-steps").value, 10) || 10) });
    $("resume-banner").hidden = true;
  } catch (e) {
    setTraining(false);
    say(`Could not start: ${e.message}`, "error");
  }
}

// Whether to go on over an adapter that was never downloaded (a new run replaces it).
const replaceUnsaved = () =>
  !state.tuned || state.downloaded || confirm("The adapter of the last run has not been downloaded, and a new run replaces it. Start a new run anyway?");

$("train").onclick = () => {
  if (!state.model) return say("Load a model first.", "error");
  if (!data().trim()) return say("Add some data first.", "error");
  if (state.estimate?.warning && !confirm(`${state.estimate.warning}. Train anyway?`)) return;
  if (!replaceUnsaved()) return;
  startTraining();
};
$("continue").onclick = () => {
  if (!data().trim()) return say("Add some data first.", "error");
  startTraining({ continued: true });
};
$("pause").onclick = () => {
  const pausing = $("pause").textContent === "Pause";
  call(pausing ? "pause" : "resume");
  $("pause").textContent = pausing ? "Resume" : "Pause";
  say(pausing ? "Paused after the current step." : "Training…");
};
$("stop").onclick = () => {
  call("stop");
  say("Stopping after the current step and saving a checkpoint…");
};
$("resume-run").onclick = () => startTraining({ resume: true, current: !!state.resumeWithForm });
$("continue-saved").onclick = () => startTraining({ resume: true, continued: true });
$("new-run-saved").onclick = () => {
  $("resume-banner").hidden = true;
  say("Load a model and add data for the new run (the saved run is kept until it starts).", "ok");
};
$("discard-run").onclick = async () => {
  await call("discard");
  $("resume-banner").hidden = true;
  say("The saved run is discarded.", "ok");
};

// --- try it -----------------------------------------------------------------------------

const histories = { base: [], tuned: [] };
let nextStream = 1;

function bubble(log, role, text) {
  const p = document.createElement("p");
  p.className = role;
  p.textContent = text;
  log.append(p);
  log.scrollTop = log.scrollHeight;
  return p;
}

async function ask(side, prompt) {
  const log = $(`chat-${side}`);
  const history = histories[side];
  history.push({ role: "user", content: prompt });
  bubble(log, "user", prompt);
  const out = bubble(log, "assistant", "");
  if (side === "tuned" && !state.tuned) {
    out.textContent = "(train first: there is no adapter yet)";
    out.dataset.done = "1";
    history.pop();
    return;
  }
  const stream = nextStream++; // the worker's text events name the request by this
  textSinks.set(stream, (piece) => (out.textContent += piece));
  const request = {
    messages: history,
    tuned: side === "tuned",
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    top_k: parseInt($("top-k").value, 10) || 0,
    max_new_tokens: parseInt($("max-new").value, 10) || 64,
    seed: parseInt($("seed").value, 10) || 0,
  };
  try {
    const g = await call("generate", { request, stream });
    out.textContent = g.text;
    out.dataset.done = "1";
    history.push({ role: "assistant", content: g.text });
  } catch (e) {
    out.textContent = `(${e.message})`;
    out.dataset.done = "1";
    history.pop();
  } finally {
    textSinks.delete(stream);
  }
}

$("chat-form").onsubmit = async (e) => {
  e.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || !state.model) return;
  $("prompt").value = "";
  await Promise.all([ask("base", prompt), ask("tuned", prompt)]);
};
$("clear-chat").onclick = () => {
  histories.base = [];
  histories.tuned = [];
  $("chat-base").replaceChildren();
  $("chat-tuned").replaceChildren();
};

$("score-form").onsubmit = async (e) => {
  e.preventDefault();
  try {
    const s = await call("score", { text: $("score-text").value, tuned: state.tuned });
    state.lastScore = s;
    $("score-result").textContent = `${state.tuned ? "fine-tuned" : "base"} model: ${s.tokens} tokens scored, mean NLL ${s.mean_nll.toFixed(6)} nats/token, perplexity ${s.perplexity.toFixed(4)}`;
    $("score-result").dataset.nll = s.mean_nll;
  } catch (err) {
    $("score-result").textContent = err.message;
  }
};

// --- teaching view ----------------------------------------------------------------------

async function showTokenLosses() {
  if (!state.model || !data().trim()) return;
  try {
    const d = await call("token_losses", { settings: settings(), data: data() });
    state.tokenLosses = d;
    tokenLosses($("token-loss"), $("token-loss-summary"), d);
  } catch (e) {
    $("token-loss-summary").textContent = e.message;
  }
}
$("token-loss-show").onclick = showTokenLosses;

// --- export -----------------------------------------------------------------------------

$("download-adapter").onclick = async () => {
  try {
    const files = await call("adapter");
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(zip(files)), download: "hearth-adapter.zip" });
    document.body.append(a);
    a.click();
    a.remove();
    state.downloaded = true;
  } catch (e) {
    say(`Could not export: ${e.message}`, "error");
  }
};

// --- start ------------------------------------------------------------------------------

async function start() {
  if (!window.isSecureContext) {
    $("insecure").hidden = false;
    $("insecure-origin").textContent = location.origin;
    return say("This page is not a secure context, so the browser hides WebGPU: open it over https.", "error");
  }
  if (!("gpu" in navigator)) return noWebGpu("This browser does not offer WebGPU (navigator.gpu is missing).");
  if (!(await navigator.gpu.requestAdapter().catch(() => null))) return noWebGpu("WebGPU is present but found no usable GPU adapter (it may be blocked or turned off).");
  try {
    const { gpu, defaults, schema, saved } = await call("init");
    state.defaults = defaults;
    state.schema = schema;
    state.gpu = gpu;
    buildSettings(schema, defaults);
    $("f16-matmul").disabled = !gpu.f16;
    $("f16-note").textContent = gpu.f16 ? "(forward and input-gradient matmuls read f16, sum in f32; off by default)" : "(this GPU has no shader-f16: the matmuls stay f32)";
    await listModels();
    $("app").hidden = false;
    say(`Ready on ${gpu.summary}${gpu.software ? " — a software adapter, so training is slow: use a tiny model" : ""}. Load a model to begin.`, "ok");
    state.metrics = [];
    state.totalSteps = 1;
    drawCharts();
    if (saved) {
      const where = saved.model.kind === "url" ? saved.model.url : saved.model.name;
      $("resume-text").textContent = saved.finished
        ? `A run on ${where} finished at step ${saved.step}; its adapter is saved in this browser.`
        : `A run on ${where} was saved at step ${saved.step} of ${saved.total_steps}.`;
      $("resume-run").hidden = saved.finished;
      $("continue-saved").hidden = !saved.finished;
      $("new-run-saved").hidden = !saved.finished;
      $("resume-banner").hidden = false;
    }
  } catch (e) {
    noWebGpu(`Hearth could not open the GPU: ${e.message}`);
  }
}

start();
