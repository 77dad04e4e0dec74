// The worker: all GPU work happens here, through hearth-core compiled to wasm, so the page
// stays responsive. The page sends {id, op, ...}; the worker answers {id, result} or
// {id, error} and sends events {event, ...} while it works (downloads, steps, text).

import init, { Session } from "./hearth-web.js";
import { fetchCached, cachedBlob, exists, keepLocal, readLocal, saveCheckpoint, loadRun, checkpointFiles, discardRun } from "./storage.js";

let session = null;
let wasm = null; // the module's exports: its memory's size is reported with each model
let model = null; // where the loaded model came from: {kind: "url", url} or {kind: "local", name, files}
let run = null; // the current run: settings, data, metrics, control flags
let deviceLost = false;
let f16Matmuls = false; // the page's f16 switch, applied again to a session opened after a lost device

const post = (msg) => self.postMessage(msg);
const event = (name, fields) => post({ event: name, ...fields });

// Session methods must not overlap (each borrows the session), so they run one at a time.
let queue = Promise.resolve();
function exclusive(fn) {
  const next = queue.then(fn);
  queue = next.catch(() => {});
  return next;
}

const parse = (s) => JSON.parse(s);
const errorText = (e) => (e && e.message) || String(e);

/** The files of a model at `where`: a .gguf URL, a folder URL, or a Hugging Face repo id. */
async function modelFiles(where) {
  const trimmed = where.trim();
  if (/\.gguf(\?.*)?$/i.test(trimmed)) {
    const url = new URL(trimmed, self.location.href).href;
    return { base: url.slice(0, url.lastIndexOf("/") + 1), names: [url.slice(url.lastIndexOf("/") + 1)] };
  }
  const repo = /^[\w.-]+\/[\w.-]+$/.test(trimmed) && !trimmed.startsWith(".") && !(await exists(new URL(trimmed + "/config.json", self.location.href).href).catch(() => false));
  const base = repo ? `https://huggingface.co/${trimmed}/resolve/main/` : new URL(trimmed.endsWith("/") ? trimmed : trimmed + "/", self.location.href).href;
  const names = ["config.json", "tokenizer.json"];
  for (const optional of ["tokenizer_config.json", "generation_config.json", "chat_template.jinja"]) {
    if (await exists(base + optional).catch(() => false)) names.push(optional);
  }
  if (await exists(base + "model.safetensors.index.json").catch(() => false)) {
    const index = JSON.parse(new TextDecoder().decode(await fetchCached(base + "model.safetensors.index.json", () => {})));
    names.push("model.safetensors.index.json", ...new Set(Object.values(index.weight_map ?? {})));
  } else {
    names.push("model.safetensors");
  }
  return { base, names };
}

// Weight files (a folder's safetensors shards, a GGUF file) stay Blobs in browser storage;
// the session reads them a tensor at a time. The other files (config, tokenizer) are handed
// over whole.
const isShard = (name) => /\.(safetensors|gguf)$/i.test(name);

/**
 * The session's reader of `shards` (name → Blob): their names, bytes start..end of one, read
 * synchronously (FileReaderSync, which workers have), and one's length.
 */
function weightReader(shards) {
  return {
    names: [...shards.keys()],
    read: (file, start, end) => new Uint8Array(new FileReaderSync().readAsArrayBuffer(shards.get(file).slice(start, end))),
    len: (file) => shards.get(file)?.size,
  };
}

async function loadFromUrl(where) {
  const { base, names } = await modelFiles(where);
  const files = [];
  const shards = new Map();
  for (const [i, name] of names.entries()) {
    const progress = (done, total) => event("download", { file: name, index: i, count: names.length, done, total });
    if (isShard(name)) {
      const blob = await cachedBlob(base + name, progress);
      shards.set(name, blob);
      progress(blob.size, blob.size);
    } else {
      const bytes = await fetchCached(base + name, progress);
      files.push([name, bytes]);
      progress(bytes.length, bytes.length);
    }
  }
  // named as the user gave it (a repo id stays a repo id in adapter_config.json)
  const given = where.trim().replace(/\/+$/, "");
  const origin = names.length === 1 && /\.gguf(\?.*)?$/i.test(given) ? given.slice(0, Math.max(0, given.lastIndexOf("/"))) || "." : given;
  return { origin, files, shards, source: { kind: "url", url: where } };
}

/** Hands the files to the session and loads them; `quant`: the QLoRA format, when chosen. */
async function stageAndLoad({ origin, files, shards, source }, quant) {
  return exclusive(() => {
    session.clear_staged();
    for (const [name, bytes] of files) session.stage_file(name, bytes);
    const reader = shards.size ? weightReader(shards) : null;
    const info = parse(session.load_model(origin, reader ?? undefined, quant ?? undefined));
    model = source;
    return info;
  });
}

/** Splits (name, Blob) pairs into the files handed over whole and the shards read in place. */
async function split(blobs) {
  const files = [];
  const shards = new Map();
  for (const [name, blob] of blobs) {
    if (isShard(name)) shards.set(name, blob);
    else files.push([name, new Uint8Array(await blob.arrayBuffer())]);
  }
  return { files, shards };
}

async function loadModel(msg) {
  if (msg.url) return stageAndLoad(await loadFromUrl(msg.url), msg.quant);
  // picked files: keep only what a model folder needs; a folder pick carries its path
  const picked = msg.files.filter((f) => /\.(json|safetensors|gguf|jinja)$/i.test(f.name));
  const folder = msg.files[0]?.webkitRelativePath?.split("/")[0] || (picked.length === 1 ? picked[0].name : "picked files");
  await keepLocal(folder, picked);
  const { files, shards } = await split(picked.map((f) => [f.name, f]));
  return stageAndLoad({ origin: folder, files, shards, source: { kind: "local", name: folder, files: picked.map((f) => f.name) } }, msg.quant);
}

async function loadSaved(source, quant) {
  if (source.kind === "url") return stageAndLoad(await loadFromUrl(source.url), quant);
  const { files, shards } = await split(await readLocal(source.name, source.files));
  return stageAndLoad({ origin: source.name, files, shards, source }, quant);
}

async function checkpoint() {
  const files = await exclusive(() => session.checkpoint());
  const saved = { model, settings: run.settings, data: run.data, step: run.step, total_steps: run.total_steps, metrics: run.metrics, save_steps: run.saveSteps, finished: !!run.finished };
  await saveCheckpoint(files, saved);
  run.lastCheckpoint = run.step;
  event("checkpoint", { step: run.step });
}

/**
 * Starts a run. `msg.resume`: from the saved checkpoint (after a reload, with the saved run's
 * settings and data, or after a failure with the page's). `msg.continue`: a new run that
 * starts from the adapter the last run ended with (after a reload, the saved one).
 */
async function train(msg) {
  if (run && run.active) throw new Error("a run is already going");
  if (deviceLost) {
    session = await Session.open();
    session.set_f16_matmuls(f16Matmuls);
    deviceLost = false;
  }
  const saved = msg.resume ? await loadRun() : null;
  if (msg.resume && !saved) throw new Error("there is no saved run to resume");
  const settings = saved && !msg.current ? saved.settings : msg.settings;
  const data = saved ? saved.data : msg.data;
  const saveSteps = msg.saveSteps ?? saved?.save_steps ?? 10;
  if (saved) {
    event("status", { text: "Loading the saved run's model…" });
    event("model", { info: await loadSaved(saved.model, saved.settings.method === "qlora" ? saved.settings.qlora_format : null) });
    const files = await checkpointFiles(saved);
    const info = await startRun(settings, data, { files, saveSteps });
    if (!msg.continue) return began(info, settings, data, saveSteps, saved);
  }
  return began(await startRun(settings, data, { continueCurrent: !!msg.continue, saveSteps }), settings, data, saveSteps, null);
}

/** session.start with the staged checkpoint `files`, if any. */
function startRun(settings, data, { files = null, continueCurrent = false, saveSteps }) {
  return exclusive(async () => {
    session.clear_staged();
    if (files) for (const [n, b] of files) session.stage_file(n, b);
    return parse(await session.start(JSON.stringify(settings), data, !!files, continueCurrent, saveSteps));
  });
}

/** Records the run the session now holds, tells the page, and starts stepping. */
function began(info, settings, data, saveSteps, resumedFrom) {
  run = {
    settings, data, active: true, paused: false, stopped: false,
    step: info.step, total_steps: info.total_steps, saveSteps, finished: info.finished || !!resumedFrom?.finished,
    metrics: resumedFrom ? resumedFrom.metrics.filter((m) => m.step <= info.step) : [],
    lastCheckpoint: resumedFrom ? info.step : null,
    tokens: 0, seconds: 0, timedSteps: 0,
  };
  event("started", { info, metrics: run.metrics, settings, data });
  trainLoop().catch(async (e) => {
    run.active = false;
    // a lost device cannot be used again: the next run opens a new one
    if (await exclusive(() => session.device_lost())) deviceLost = true;
    event("failed", { error: errorText(e), checkpoint: run.lastCheckpoint });
  });
  return info;
}

// The run engine (hearth-core) decides what follows each step: evaluations, early stopping,
// divergence, when a checkpoint is due. This loop renders its events and stores checkpoints.
async function trainLoop() {
  let earlyStopped = false;
  if (!run.finished) {
    // the first step would compile every kernel: done first, as a stage of its own
    event("status", { text: "Preparing the GPU kernels (once per session)…" });
    event("preparing", {});
    await exclusive(() => session.prepare_kernels());
    event("status", { text: "Training… (pause or stop at any time; checkpoints are kept in this browser)" });
  }
  while (!run.stopped && !run.finished) {
    if (run.paused) {
      await new Promise((resolve) => (run.wake = resolve));
      continue;
    }
    const t0 = performance.now();
    const events = parse(await exclusive(() => session.advance()));
    const seconds = (performance.now() - t0) / 1000;
    for (const ev of events) {
      if (ev.event === "step") {
        // the kernels were compiled before the first step (prepare_kernels): every step counts
        run.tokens += ev.tokens;
        run.seconds += seconds;
        run.timedSteps += 1;
        run.step = ev.step;
        const metric = { step: ev.step, epoch: ev.epoch, loss: ev.loss, lr: ev.lr, grad_norm: ev.grad_norm };
        if (ev.preference) Object.assign(metric, { margin: ev.preference["rewards/margins"], accuracy: ev.preference["rewards/accuracies"] });
        run.metrics.push(metric);
        event("step", { ...metric, tokens_per_s: run.tokens / run.seconds, eta_s: (run.seconds / run.timedSteps) * (run.total_steps - ev.step), total_steps: run.total_steps });
        // the teaching view: the adapter's update per layer, about 20 times a run (and at
        // its end, below), and the memory once a step has reached its peak
        if (ev.step % Math.max(1, Math.ceil(run.total_steps / 20)) === 0 && ev.step !== run.total_steps) await showNorms();
        if (!run.memoryShown) {
          run.memoryShown = true;
          event("memory", parse(await exclusive(() => session.run_memory())));
        }
      } else if (ev.event === "eval") {
        const metric = { step: ev.step, val_loss: ev.loss, best: ev.best };
        if (ev.preference) Object.assign(metric, { val_margin: ev.preference["rewards/margins"], val_accuracy: ev.preference["rewards/accuracies"] });
        run.metrics.push(metric);
        event("eval", ev);
      } else if (ev.event === "early_stop") {
        earlyStopped = true;
        event("early_stop", ev);
      } else if (ev.event === "checkpoint_due") {
        await checkpoint();
      } else if (ev.event === "diverged") {
        // the checkpoints kept are from before the divergence
        run.active = false;
        run.finished = true;
        // browser storage keeps the latest checkpoint only: offer it when it is a good one
        event("failed", { error: ev.error, checkpoint: ev.last_good_checkpoint === run.lastCheckpoint ? run.lastCheckpoint : null });
        return;
      } else if (ev.event === "done") {
        run.finished = true;
      }
    }
  }
  // the end (or a stop): the adapter the run ends with is kept in browser storage
  if (run.lastCheckpoint !== run.step) await checkpoint();
  await showNorms();
  run.active = false;
  event("finished", { step: run.step, stopped: run.stopped, early_stopped: earlyStopped, tokens_per_s: run.tokens / Math.max(run.seconds, 1e-9) });
}

async function showNorms() {
  event("norms", { step: run.step, norms: parse(await exclusive(() => session.update_norms())) });
}

const ops = {
  async init() {
    wasm = await init();
    session = await Session.open();
    const saved = await loadRun().catch(() => null);
    return {
      gpu: parse(session.gpu_json()),
      defaults: parse(Session.default_settings()),
      schema: parse(Session.settings_schema()),
      saved: saved && { step: saved.step, total_steps: saved.total_steps, model: saved.model, finished: saved.finished },
    };
  },
  example: () => Session.example_data(),
  preference_example: () => Session.preference_example_data(),
  load: async (m) => ({ ...(await loadModel(m)), wasm_memory: wasm.memory.buffer.byteLength }),
  inspect: (m) => exclusive(() => parse(session.inspect_data(JSON.stringify(m.settings), m.data))),
  preview: (m) => exclusive(() => parse(session.preview(JSON.stringify(m.settings), m.data, m.index))),
  estimate: (m) => exclusive(() => parse(session.estimate(JSON.stringify(m.settings), m.data))),
  train,
  f16: (m) =>
    exclusive(() => {
      f16Matmuls = session.set_f16_matmuls(m.on);
      return f16Matmuls;
    }),
  pause() {
    if (run) run.paused = true;
  },
  resume() {
    if (run) {
      run.paused = false;
      run.wake?.();
    }
  },
  stop() {
    if (run) {
      run.stopped = true;
      run.paused = false;
      run.wake?.();
    }
  },
  discard: () => discardRun(),
  generate: (m) =>
    exclusive(() => session.generate(JSON.stringify(m.request), (piece) => event("text", { stream: m.stream, piece }))).then(parse),
  score: (m) => exclusive(() => session.score(m.text, m.tuned)).then(parse),
  adapter: () => exclusive(() => session.adapter_files()),
  token_losses: (m) => exclusive(() => session.token_losses(JSON.stringify(m.settings), m.data)).then(parse),
};

self.onmessage = async ({ data: msg }) => {
  try {
    const result = await ops[msg.op](msg);
    post({ id: msg.id, result });
  } catch (e) {
    post({ id: msg.id, error: errorText(e) });
  }
};
