//! What the worker holds: the GPU, the loaded model, and the training run. The worker calls
//! one method at a time (wasm-bindgen refuses a second `&mut` call while one is awaiting), and
//! gets JSON strings back, so the page's JavaScript stays a thin layer over hearth-core.

use hearth_core::io::load::{load_hf_folder, shard_names, stream_gguf, stream_hf_folder, Files, GpuLoaded};
use hearth_core::io::ReadRange;
use hearth_core::model::chat::Message;
use hearth_core::model::generate::{generate, GenerateParams};
use hearth_core::model::sampling::SamplingParams;
use hearth_core::model::{Config, Model, ModelOptions, Tokenizer, WeightFormat};
use hearth_core::quant::QuantFormat;
use hearth_core::train::batch::max_batch_tokens;
use hearth_core::train::data::{generation_prompt, parse_records, render_record, split_records, tokenize, DataStats, Template};
use hearth_core::train::memory::{batch_sequences, estimate, lora_params, ModelShape};
use hearth_core::train::preference::{pair_records, prepare_examples};
use hearth_core::train::run::{Event, Run};
use hearth_core::{Error, GpuContext};
use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

use hearth_core::train::settings::{schema_json, RunSettings};

/// Where pasted or uploaded data comes from, for error messages ("pasted data, line 3: …").
const DATA_ORIGIN: &str = "the data";

fn js(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// The small files handed over by the page (an HF folder's config and tokenizer files).
struct StagedFiles<'a> {
    origin: &'a str,
    files: &'a [(String, Vec<u8>)],
}

impl Files for StagedFiles<'_> {
    fn origin(&self) -> &str {
        self.origin
    }

    fn read(&self, name: &str) -> hearth_core::Result<Option<Vec<u8>>> {
        Ok(self.files.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()))
    }
}

/// The model as loaded, kept so that a QLoRA run can requantize it.
struct Base {
    origin: String,
    /// The files as staged: all of them, or with `ranges` all but the safetensors shards.
    files: Vec<(String, Vec<u8>)>,
    ranges: Option<JsRanges>,
    cfg: Config,
    tok: Tokenizer,
    description: String,
    /// The format of the linear layers in the files, and on the GPU now.
    file_format: WeightFormat,
    format: WeightFormat,
    /// What `format` was converted to on load (None: as the file has it).
    quant: Option<WeightFormat>,
    /// The lm_head's format (not converted).
    head_format: WeightFormat,
    /// Loaded in NF4 because its f32 weights would not fit the tab: no run may ask for them.
    qlora_only: bool,
}

/// The most weight bytes the page loads as they are; above it a model loads in NF4. Streamed
/// loads hold only the embedding and one layer at a time in wasm memory (4 GiB at most), so
/// what this now bounds is the GPU memory the weights take beside training's activations on
/// the integrated GPUs a class has.
const TAB_WEIGHT_LIMIT: u64 = 5 << 29; // 2.5 GiB

/// What the streamed weight files take (a folder's shards, or the .gguf): about what their
/// weights take on the host as loaded (16-bit weights stay 16-bit, f32 stays f32).
fn streamed_bytes(origin: &str, files: &[(String, Vec<u8>)], ranges: &JsRanges) -> Option<u64> {
    let names = match ranges.gguf() {
        Some(gguf) => vec![gguf.to_string()],
        None => shard_names(&StagedFiles { origin, files }).ok()?,
    };
    names.iter().map(|n| ranges.len(n).ok()).sum()
}

#[wasm_bindgen]
pub struct Session {
    ctx: GpuContext,
    staged: Vec<(String, Vec<u8>)>,
    base: Option<Base>,
    /// The model while no run holds it.
    model: Option<Model>,
    run: Option<Run>,
    /// GPU bytes the allocator held when the run started: (the model alone, with the run's
    /// own buffers).
    run_memory: (u64, u64),
}

#[derive(Deserialize)]
struct GenerateRequest {
    messages: Vec<Message>,
    #[serde(default)]
    tuned: bool,
    #[serde(default = "default_max_new")]
    max_new_tokens: usize,
    #[serde(default)]
    temperature: f32,
    #[serde(default)]
    top_k: usize,
    #[serde(default = "one")]
    top_p: f32,
    #[serde(default = "one")]
    repetition_penalty: f32,
    #[serde(default)]
    seed: u64,
}

fn default_max_new() -> usize {
    96
}

fn one() -> f32 {
    1.0
}

#[wasm_bindgen]
impl Session {
    /// Opens WebGPU; the error says which browsers work when there is none.
    pub async fn open() -> Result<Session, JsError> {
        let ctx = GpuContext::new(None).await.map_err(js)?;
        Ok(Session { ctx, staged: Vec::new(), base: None, model: None, run: None, run_memory: (0, 0) })
    }

    /// The settings form's defaults (the CLI's).
    pub fn default_settings() -> String {
        serde_json::to_string(&RunSettings::default()).expect("json")
    }

    /// Every setting with its label, help, kind, range and default, for the settings form
    /// (hearth-core's schema, which the CLI's flags come from too).
    pub fn settings_schema() -> String {
        schema_json().to_string()
    }

    /// The built-in customer-service dataset.
    pub fn example_data() -> String {
        hearth_core::train::data::CUSTOMER_SERVICE_JSONL.to_string()
    }

    /// The built-in preference pairs: the bike shop's questions, each with a good and a bad
    /// answer.
    pub fn preference_example_data() -> String {
        hearth_core::train::data::CUSTOMER_SERVICE_PREFERENCES_JSONL.to_string()
    }

    /// Whether the GPU device was lost: the worker then opens a new session for the next run.
    pub fn device_lost(&self) -> bool {
        self.ctx.is_lost()
    }

    /// Forwards and input gradients in f16 tiles, summed in f32, where the adapter has
    /// shader-f16 (the
    /// CLI's HEARTH_F16_MATMUL=1): faster on most GPUs, at f16's precision. Returns whether it
    /// is on. The kernels read it at each launch, so it applies from the next one.
    pub fn set_f16_matmuls(&mut self, on: bool) -> bool {
        self.ctx.set_f16_matmuls(on);
        self.ctx.f16_matmuls()
    }

    /// The adapter: name, type, limits.
    pub fn gpu_json(&self) -> String {
        let s = self.ctx.summary();
        json!({
            "summary": s.to_string(),
            "software": s.is_software,
            "f16": s.shader_f16,
            "max_storage_binding": s.max_storage_binding,
            "max_buffer": s.max_buffer,
        })
        .to_string()
    }

    /// Hands over one file of the next model or checkpoint.
    pub fn stage_file(&mut self, name: String, bytes: Vec<u8>) {
        self.staged.retain(|(n, _)| *n != name);
        self.staged.push((name, bytes));
    }

    pub fn clear_staged(&mut self) {
        self.staged.clear();
    }

    /// Loads the staged files as a model: one .gguf file, or an HF folder's files. With
    /// `reader`, the weight files (a folder's safetensors shards, or the .gguf) are not staged
    /// but read a tensor at a time: `reader.names` lists them, `reader.read(file, start, end)`
    /// gives bytes start..end of one as a Uint8Array and `reader.len(file)` its length (the
    /// worker slices the cached files), so the files never sit in wasm memory beside the
    /// weights, and 16-bit weights stay 16-bit. `quant` converts the linear weights on load
    /// (the page's QLoRA format); a model whose weights would not fit the tab's memory is
    /// loaded in NF4 without being asked, and then trains with QLoRA only.
    pub fn load_model(&mut self, origin: String, reader: Option<js_sys::Object>, quant: Option<String>) -> Result<String, JsError> {
        let files = std::mem::take(&mut self.staged);
        let ranges = reader.map(|r| JsRanges::new(&r)).transpose().map_err(js)?;
        let mut quant = quant.as_deref().map(WeightFormat::parse).transpose().map_err(js)?;
        let too_big = quant.is_none() && ranges.as_ref().and_then(|r| streamed_bytes(&origin, &files, r)).is_some_and(|b| b > TAB_WEIGHT_LIMIT);
        if too_big {
            quant = Some(WeightFormat::Quant(QuantFormat::Nf4));
        }
        // the GPU memory of the current model is freed first: a file that does not load
        // leaves no model
        (self.run, self.model, self.base) = (None, None, None);
        let loaded = model_on_gpu(&self.ctx, &origin, &files, ranges.as_ref(), quant).map_err(|e| js(explain(e)))?;
        let (format, head_format) = loaded.model.formats();
        let file_format = if quant.is_some() { WeightFormat::F32 } else { format };
        let cfg = loaded.model.cfg.clone();
        self.model = Some(loaded.model);
        self.base = Some(Base { origin, files, ranges, cfg, tok: loaded.tokenizer, description: loaded.description, file_format, format, quant, qlora_only: too_big, head_format });
        Ok(self.model_json())
    }

    pub fn model_json(&self) -> String {
        let Some(b) = &self.base else { return "null".into() };
        let c = &b.cfg;
        json!({
            "origin": b.origin,
            "architecture": c.arch.name(),
            "features": c.features(),
            "layers": c.n_layers,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "heads": c.n_heads,
            "kv_heads": c.n_kv_heads,
            "vocab_size": c.vocab_size,
            "max_seq_len": c.max_seq_len,
            "params": c.param_count(),
            "description": b.description,
            "format": b.format.name(),
            "qlora_only": b.qlora_only,
            "chat_template": b.tok.chat_template.is_some(),
        })
        .to_string()
    }

    /// How the data parses and tokenizes under `settings`: counts for the train and
    /// validation splits, and each record's fields for the table.
    pub fn inspect_data(&self, settings: &str, data: &str) -> Result<String, JsError> {
        let (base, s) = (self.base()?, RunSettings::from_json(settings).map_err(js)?);
        let records = parse_records(DATA_ORIGIN, data).map_err(js)?;
        let rows: Vec<&serde_json::Map<String, Value>> = records.iter().map(|r| &r.fields).collect();
        let (train, val) = split_records(records.clone(), s.val_split, s.seed);
        let opts = s.data_options(&base.tok).map_err(js)?;
        let objective = s.objective().map_err(js)?;
        let (_, train_stats) = prepare_examples(&objective, &train, &base.tok, &opts).map_err(js)?;
        let val_stats = if val.is_empty() { None } else { Some(prepare_examples(&objective, &val, &base.tok, &opts).map_err(js)?.1) };
        Ok(json!({
            "records": rows,
            "unit": if objective.is_preference() { "pairs" } else { "examples" },
            "template": opts.template.name(),
            "train": stats_json(&train_stats),
            "validation": val_stats.as_ref().map(stats_json),
        })
        .to_string())
    }

    /// Record `index` rendered by the template: each token's text and whether it carries loss.
    pub fn preview(&self, settings: &str, data: &str, index: usize) -> Result<String, JsError> {
        let (base, s) = (self.base()?, RunSettings::from_json(settings).map_err(js)?);
        let records = parse_records(DATA_ORIGIN, data).map_err(js)?;
        let r = records.get(index).ok_or_else(|| js(format!("there is no record {}", index + 1)))?;
        let opts = s.data_options(&base.tok).map_err(js)?;
        // a preference record: its chosen sequence, then its rejected one
        let parts = if s.objective().map_err(js)?.is_preference() {
            let (c, r) = pair_records(r).map_err(js)?;
            vec![("chosen", c), ("rejected", r)]
        } else {
            vec![("", r.clone())]
        };
        let chat = matches!(opts.template, Template::Model | Template::Chatml);
        let mut tokens = Vec::new();
        for (part, r) in &parts {
            let segments = render_record(r, &opts, &base.tok).map_err(js)?;
            let ex = tokenize(&segments, &base.tok, chat, opts.train_on_prompt).map_err(js)?;
            for (i, (&id, &loss)) in ex.tokens.iter().zip(&ex.loss).enumerate() {
                let text = base.tok.decode(&[id], false).map_err(js)?;
                // the first token is never predicted, so it never counts
                tokens.push(json!({ "id": id, "text": text, "loss": loss && i > 0, "cut": i >= opts.max_seq_len, "part": part }));
            }
        }
        Ok(json!({ "tokens": tokens, "template": opts.template.name() }).to_string())
    }

    /// The memory a run with these settings would take, split into parts, the LoRA shapes of
    /// each target, and a warning when it would not fit.
    pub fn estimate(&self, settings: &str, data: &str) -> Result<String, JsError> {
        let (base, s) = (self.base()?, RunSettings::from_json(settings).map_err(js)?);
        let tcfg = s.train_config().map_err(js)?;
        let format = s.quant().map_err(js)?.unwrap_or(base.file_format);
        // the micro-batch the data gives, else a full one
        let sequences = batch_sequences(&tcfg.objective, s.batch_size);
        let tokens = parse_records(DATA_ORIGIN, data)
            .ok()
            .and_then(|r| prepare_examples(&tcfg.objective, &split_records(r, s.val_split, s.seed).0, &base.tok, &s.data_options(&base.tok).ok()?).ok())
            .map(|(ex, _)| ex)
            .map(|ex| max_batch_tokens(&ex, sequences))
            .filter(|&n| n > 0)
            .unwrap_or(sequences * s.max_seq_len);
        let c = &base.cfg;
        let shape = ModelShape { head_format: base.head_format, chunk: 256, ctx_tokens: model_ctx(c), binding_limit: self.ctx.limits().max_storage_buffer_binding_size };
        let auto_ckpt = estimate(c, format, &tcfg.lora, tokens, false, shape).total() > s.budget_bytes();
        let checkpointing = tcfg.checkpointing.unwrap_or(auto_ckpt);
        let e = estimate(c, format, &tcfg.lora, tokens, checkpointing, shape);
        let limits = self.ctx.limits();
        // the largest buffer of the pass: a (tokens, widest layer) activation
        let widest = 4 * tokens as u64 * c.intermediate_size.max(c.hidden_size).max(c.q_dim()) as u64;
        let binding = limits.max_storage_buffer_binding_size;
        let warning = if widest > binding {
            Some(format!(
                "one activation needs {} MiB but this GPU binds at most {} MiB: lower the batch size or the max sequence length",
                widest >> 20,
                binding >> 20
            ))
        } else if e.total() > s.budget_bytes() {
            Some(format!(
                "about {} MiB is more than the {} GiB memory budget: lower the batch size, the max sequence length or r, use QLoRA, or turn gradient checkpointing on",
                e.total() >> 20,
                s.memory_budget_gb
            ))
        } else {
            None
        };
        let targets: Vec<Value> = tcfg
            .lora
            .targets
            .iter()
            .map(|&t| {
                let (out, inp) = t.shape(c);
                json!({ "name": t.name(), "d_in": inp, "d_out": out, "r": s.r, "lora": s.r * (inp + out), "base": inp * out })
            })
            .collect();
        Ok(json!({
            "format": format.name(),
            "tokens": tokens,
            "checkpointing": checkpointing,
            "base": e.base, "adapter": e.adapter, "gradients": e.gradients, "optimizer": e.optimizer, "activations": e.activations,
            "inference": e.inference,
            "total": e.total(),
            "budget": s.budget_bytes(),
            "max_storage_binding": binding,
            "warning": warning,
            "layers": c.n_layers,
            "targets": targets,
            "trainable": lora_params(c, s.r, &tcfg.lora.targets),
            "params": c.param_count(),
        })
        .to_string())
    }

    /// Prepares a run; with `resume` the staged files are a checkpoint to continue from;
    /// with `continue_current` the new run starts from the adapter the current run ends with
    /// (as `hearth train --adapter` does). A checkpoint is due every `save_steps` steps (the
    /// page's storage cadence).
    pub async fn start(&mut self, settings: &str, data: &str, resume: bool, continue_current: bool, save_steps: usize) -> Result<String, JsError> {
        let mut s = RunSettings::from_json(settings).map_err(js)?;
        s.save_steps = save_steps.max(1);
        s.train_config().map_err(js)?; // every setting is checked before anything is loaded
        let want = s.quant().map_err(js)?;
        if want.is_none() && self.base()?.qlora_only {
            return Err(js("this model was loaded in NF4 because its weights would not fit the tab's memory: choose the method qlora"));
        }
        let start = match (continue_current, self.run.as_mut()) {
            (false, _) => None,
            (true, Some(run)) => Some(run.final_adapter(&self.ctx).await.map_err(js)?),
            (true, None) => return Err(js("there is no adapter to continue from: train first")),
        };
        self.reclaim_model();
        if self.base()?.quant != want {
            self.model = None; // free the GPU copy before the new one is made
            let b = self.base.as_ref().expect("checked");
            let model = model_on_gpu(&self.ctx, &b.origin, &b.files, b.ranges.as_ref(), want).map_err(|e| js(explain(e)))?.model;
            let b = self.base.as_mut().expect("checked");
            (b.format, b.quant) = (model.formats().0, want);
            self.model = Some(model);
        }
        let base = self.base.as_ref().expect("checked");
        let records = parse_records(DATA_ORIGIN, data).map_err(js)?;
        let spec = s.run_spec(&base.tok).map_err(js)?;
        let template = spec.data.template.name().to_string();
        let model = self.model.take().expect("loaded");
        let before = self.ctx.memory().live_bytes;
        self.ctx.reset_peak_memory();
        let mut engine = Run::new(&self.ctx, model, &base.tok, spec, records, None, start, &base.origin).map_err(|e| js(explain(e)))?;
        if resume {
            let staged = std::mem::take(&mut self.staged);
            let read = |name: &str| {
                staged.iter().find(|(n, _)| n == name).map(|(_, b)| b.clone()).ok_or_else(|| Error::bad_file("the checkpoint", format!("{name} is missing")))
            };
            engine.resume(&self.ctx, "the saved checkpoint", &read).map_err(js)?;
        }
        let t = &engine.trainer;
        let trainable = t.model.adapter.as_ref().expect("set by the run").adapter.trainable_line(base.cfg.param_count());
        let info = json!({
            "step": t.state.step,
            "total_steps": t.total_steps,
            "steps_per_epoch": t.steps_per_epoch(),
            "warmup": t.warmup,
            "checkpointing": t.checkpointing(),
            "max_tokens": t.max_tokens(),
            "trainable": trainable,
            "train": stats_json(&engine.train_stats),
            "validation_examples": engine.val_stats.as_ref().map_or(0, |v| v.examples),
            "template": template,
            "finished": engine.finished(),
        });
        self.run = Some(engine);
        self.run_memory = (before, self.ctx.memory().live_bytes);
        Ok(info.to_string())
    }

    /// One optimizer step and what follows it, as a JSON array of events:
    /// {event: "step" | "eval" | "checkpoint_due" | "early_stop" | "diverged" | "done", ...}.
    pub async fn advance(&mut self) -> Result<String, JsError> {
        let run = self.run.as_mut().ok_or_else(|| js("no run has started"))?;
        if run.finished() {
            return Err(js("the run is complete"));
        }
        let events = run.advance(&self.ctx).await.map_err(|e| js(explain(e)))?;
        let events: Vec<Value> = events
            .into_iter()
            .map(|e| match e {
                Event::Step(st) => json!({
                    "event": "step", "step": st.step, "epoch": st.epoch, "loss": st.loss, "lr": st.lr,
                    "grad_norm": st.grad_norm, "tokens": st.tokens,
                    "preference": st.preference.map(|p| Value::Object(p.to_json(""))),
                }),
                Event::Eval { step, stats, best } => json!({
                    "event": "eval", "step": step, "loss": stats.loss, "perplexity": stats.perplexity, "tokens": stats.tokens, "best": best,
                    "preference": stats.preference.map(|p| Value::Object(p.to_json(""))),
                }),
                Event::CheckpointDue { step } => json!({ "event": "checkpoint_due", "step": step }),
                Event::EarlyStop { step, evals_since_best } => json!({ "event": "early_stop", "step": step, "evals_since_best": evals_since_best }),
                Event::Diverged { step, detail, last_good_checkpoint } => json!({
                    "event": "diverged", "step": step, "last_good_checkpoint": last_good_checkpoint,
                    "error": explain(Error::Diverged { step, detail }),
                }),
                Event::Done { step, early_stopped } => json!({ "event": "done", "step": step, "early_stopped": early_stopped }),
            })
            .collect();
        Ok(Value::Array(events).to_string())
    }

    /// Compiles the GPU kernels of a step before the run's first (a stage of its own on the
    /// page, kept out of tokens/s and the ETA).
    pub async fn prepare_kernels(&mut self) -> Result<(), JsError> {
        let run = self.run.as_mut().ok_or_else(|| js("no run has started"))?;
        run.prepare_kernels(&self.ctx).await.map_err(|e| js(explain(e)))
    }

    /// The run's checkpoint files as [[name, bytes], …].
    pub async fn checkpoint(&mut self) -> Result<js_sys::Array, JsError> {
        let run = self.run.as_mut().ok_or_else(|| js("no run has started"))?;
        Ok(file_array(run.checkpoint(&self.ctx).await.map_err(js)?))
    }

    /// The adapter the run ends with, in PEFT's format: adapter_config.json and
    /// adapter_model.safetensors.
    pub async fn adapter_files(&mut self) -> Result<js_sys::Array, JsError> {
        let run = self.run.as_mut().ok_or_else(|| js("train an adapter first"))?;
        Ok(file_array(run.adapter_files(&self.ctx).await.map_err(js)?))
    }

    /// Answers the last user message of `request.messages` with the base model or the
    /// fine-tuned one, calling `on_text` with each new piece of text.
    pub async fn generate(&mut self, request: &str, on_text: &js_sys::Function) -> Result<String, JsError> {
        let req: GenerateRequest = serde_json::from_str(request).map_err(|e| js(format!("generate: {e}")))?;
        let opts = match &self.run {
            Some(run) => run.spec.data.clone(),
            None => RunSettings::default().data_options(&self.base()?.tok).map_err(js)?,
        };
        let tok = &self.base.as_ref().expect("checked").tok;
        let (prompt, chat) = generation_prompt(&req.messages, &opts, tok).map_err(js)?;
        let ids = tok.encode(&prompt, !chat).map_err(js)?;
        let params = GenerateParams {
            max_new_tokens: req.max_new_tokens,
            sampling: SamplingParams { temperature: req.temperature, top_k: req.top_k, top_p: req.top_p, repetition_penalty: req.repetition_penalty, seed: req.seed },
            stop_strings: Vec::new(),
            // the base and the fine-tuned model take turns on the same cache
            reuse_cache: false,
        };
        let (ctx, model) = (&self.ctx, model_of(&mut self.model, &mut self.run)?);
        // the base model is the same weights with the adapter set aside
        let set_aside = if req.tuned {
            if model.adapter.is_none() {
                return Err(js("there is no fine-tuned adapter yet: train first"));
            }
            None
        } else {
            model.adapter.take()
        };
        let out = generate(ctx, model, tok, &ids, &params, |piece| {
            let _ = on_text.call1(&JsValue::NULL, &JsValue::from_str(piece));
        })
        .await;
        if set_aside.is_some() {
            model.adapter = set_aside;
        }
        let g = out.map_err(js)?;
        Ok(json!({ "text": g.text, "tokens": g.ids.len(), "stop": format!("{:?}", g.stop) }).to_string())
    }

    /// Mean NLL per predicted token of `text` (tokenized as HF's `tokenizer(text)`), with the
    /// adapter when `tuned`: the number `hearth score --adapter` prints.
    pub async fn score(&mut self, text: &str, tuned: bool) -> Result<String, JsError> {
        let ids = self.base()?.tok.encode(text, true).map_err(js)?;
        if ids.len() < 2 {
            return Err(js("the text to score needs at least two tokens"));
        }
        let (ctx, model) = (&self.ctx, model_of(&mut self.model, &mut self.run)?);
        let set_aside = if tuned { None } else { model.adapter.take() };
        let out = model.score(ctx, &ids).await;
        if set_aside.is_some() {
            model.adapter = set_aside;
        }
        let (n, total) = out.map_err(js)?;
        let mean = total / n as f64;
        Ok(json!({ "tokens": n, "mean_nll": mean, "perplexity": mean.exp() }).to_string())
    }

    /// The GPU memory of the run, measured by the allocator: the base model (and its KV
    /// cache), the buffers the run allocated when it started (adapter, gradients, AdamW
    /// moments, the pass's work buffers), and the peak while it stepped.
    pub fn run_memory(&self) -> Result<String, JsError> {
        if self.run.is_none() {
            return Err(js("no run has started"));
        }
        let (model, started) = self.run_memory;
        Ok(json!({ "model": model, "run": started.saturating_sub(model), "peak": self.ctx.memory().peak_bytes.max(started) }).to_string())
    }

    /// How much each adapted layer changes its weight now: ‖scale·B·A‖ per layer and module.
    pub async fn update_norms(&mut self) -> Result<String, JsError> {
        let run = self.run.as_mut().ok_or_else(|| js("no run has started"))?;
        let adapter = run.final_adapter(&self.ctx).await.map_err(js)?;
        let norms: Vec<Value> = adapter.tensors.iter().map(|t| json!({ "layer": t.layer, "module": t.target.name(), "norm": t.update_norm() })).collect();
        Ok(json!({ "layers": self.base()?.cfg.n_layers, "norms": norms }).to_string())
    }

    /// Each token's NLL on one example, with the base model ("before") and, once there is
    /// one, the adapter ("after"): the first validation record, else the first record. Only
    /// the tokens that carry loss under the run's template are marked.
    pub async fn token_losses(&mut self, settings: &str, data: &str) -> Result<String, JsError> {
        let s = RunSettings::from_json(settings).map_err(js)?;
        let records = parse_records(DATA_ORIGIN, data).map_err(js)?;
        let (train, val) = split_records(records, s.val_split, s.seed);
        let (split, record) = match (val.first(), train.first()) {
            (Some(r), _) => ("validation", r.clone()),
            (None, Some(r)) => ("training", r.clone()),
            (None, None) => return Err(js("there is no record to show")),
        };
        let opts = match &self.run {
            Some(run) => run.spec.data.clone(),
            None => s.data_options(&self.base()?.tok).map_err(js)?,
        };
        // a preference pair: its chosen answer
        let record = if s.objective().map_err(js)?.is_preference() { pair_records(&record).map_err(js)?.0 } else { record };
        let tok = &self.base.as_ref().expect("checked").tok;
        let chat = matches!(opts.template, Template::Model | Template::Chatml);
        let segments = render_record(&record, &opts, tok).map_err(js)?;
        let mut ex = tokenize(&segments, tok, chat, opts.train_on_prompt).map_err(js)?;
        ex.tokens.truncate(opts.max_seq_len);
        let texts = ex.tokens.iter().map(|&id| tok.decode(&[id], false)).collect::<hearth_core::Result<Vec<_>>>().map_err(js)?;
        let (ctx, model) = (&self.ctx, model_of(&mut self.model, &mut self.run)?);
        let adapter = model.adapter.take();
        let before = model.token_nll(ctx, &ex.tokens).await;
        model.adapter = adapter;
        let before = before.map_err(js)?;
        let after = if model.adapter.is_some() { Some(model.token_nll(ctx, &ex.tokens).await.map_err(js)?) } else { None };
        let tokens: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                // token i is predicted by position i − 1; the first is never predicted
                let nll = |v: &Vec<f32>| (i > 0).then(|| v[i - 1]);
                json!({ "text": text, "loss": i > 0 && ex.loss[i], "before": nll(&before), "after": after.as_ref().and_then(nll) })
            })
            .collect();
        Ok(json!({ "split": split, "tokens": tokens }).to_string())
    }
}

impl Session {
    fn base(&self) -> Result<&Base, JsError> {
        self.base.as_ref().ok_or_else(|| js("load a model first"))
    }

    /// Takes the model back from a finished or abandoned run, without its adapter.
    fn reclaim_model(&mut self) {
        if let Some(run) = self.run.take() {
            let mut model = run.trainer.model;
            model.adapter = None;
            self.model = Some(model);
        }
    }
}

/// The model, wherever it is now.
fn model_of<'a>(model: &'a mut Option<Model>, run: &'a mut Option<Run>) -> Result<&'a mut Model, JsError> {
    match run {
        Some(r) => Ok(&mut r.trainer.model),
        None => model.as_mut().ok_or_else(|| js("load a model first")),
    }
}

/// The staged model on the GPU: a .gguf or a folder's shards streamed a layer at a time when
/// the worker reads them in place (the page keeps 16-bit weights in 16 bits: half the memory
/// of f32), else the files read whole and uploaded.
fn model_on_gpu(ctx: &GpuContext, origin: &str, files: &[(String, Vec<u8>)], ranges: Option<&JsRanges>, quant: Option<WeightFormat>) -> hearth_core::Result<GpuLoaded> {
    let opts = |cfg: &Config| ModelOptions { chunk: 256, max_seq: model_ctx(cfg), max_binding: None };
    if let Some((r, name)) = ranges.and_then(|r| Some((r, r.gguf()?))) {
        return stream_gguf(ctx, r, name, &format!("{origin}/{name}"), quant, true, &opts);
    }
    let staged = StagedFiles { origin, files };
    let loaded = match (files, ranges) {
        ([], _) => return Err(Error::bad_file(origin, "no files were given")),
        (_, Some(r)) => return stream_hf_folder(ctx, &staged, r, quant, true, &opts),
        (_, None) => load_hf_folder(&staged, quant)?,
    };
    let model = Model::new(ctx, &loaded.cfg, loaded.weights, opts(&loaded.cfg))?;
    Ok(GpuLoaded { model, tokenizer: loaded.tokenizer, description: loaded.description })
}

/// The worker's byte ranges of the files it keeps (see [`Session::load_model`]).
struct JsRanges {
    /// The files it keeps.
    names: Vec<String>,
    read: js_sys::Function,
    len: js_sys::Function,
}

impl JsRanges {
    /// From the worker's `{names, read, len}`.
    fn new(reader: &js_sys::Object) -> Result<Self, String> {
        let field = |name: &str| js_sys::Reflect::get(reader, &JsValue::from_str(name)).map_err(|_| format!("the weight reader has no {name}"));
        let function = |name: &str| field(name)?.dyn_into::<js_sys::Function>().map_err(|_| format!("the weight reader's {name} is not a function"));
        let names = js_sys::Array::from(&field("names")?).iter().filter_map(|n| n.as_string()).collect();
        Ok(JsRanges { names, read: function("read")?, len: function("len")? })
    }

    /// The .gguf file it keeps, if that is what it keeps.
    fn gguf(&self) -> Option<&str> {
        match self.names.as_slice() {
            [name] if name.to_lowercase().ends_with(".gguf") => Some(name),
            _ => None,
        }
    }

    fn failed(file: &str, e: JsValue) -> Error {
        Error::bad_file(file, format!("could not be read from browser storage: {}", e.as_string().or_else(|| js_sys::Error::from(e).message().as_string()).unwrap_or_default()))
    }
}

impl ReadRange for JsRanges {
    fn len(&self, file: &str) -> hearth_core::Result<u64> {
        let v = self.len.call1(&JsValue::NULL, &JsValue::from_str(file)).map_err(|e| Self::failed(file, e))?;
        v.as_f64().map(|n| n as u64).ok_or_else(|| Error::bad_file(file, "is not in browser storage"))
    }

    fn read(&self, file: &str, start: u64, end: u64) -> hearth_core::Result<Vec<u8>> {
        let v = self.read.call3(&JsValue::NULL, &JsValue::from_str(file), &JsValue::from_f64(start as f64), &JsValue::from_f64(end as f64)).map_err(|e| Self::failed(file, e))?;
        let bytes = js_sys::Uint8Array::new(&v).to_vec();
        if bytes.len() as u64 != end - start {
            return Err(Error::bad_file(file, format!("gave {} bytes where {} were asked for (bytes {start}..{end})", bytes.len(), end - start)));
        }
        Ok(bytes)
    }
}

fn stats_json(s: &DataStats) -> Value {
    json!({ "examples": s.examples, "truncated": s.truncated, "dropped": s.dropped, "tokens": s.tokens, "loss_tokens": s.loss_tokens })
}

fn file_array(files: Vec<(String, Vec<u8>)>) -> js_sys::Array {
    files
        .into_iter()
        .map(|(name, bytes)| {
            let pair = js_sys::Array::new();
            pair.push(&JsValue::from_str(&name));
            pair.push(&js_sys::Uint8Array::from(bytes.as_slice()));
            JsValue::from(pair)
        })
        .collect()
}

/// An error with what to do about it on this page.
fn explain(e: Error) -> String {
    match &e {
        Error::OutOfMemory(_) => {
            format!("{e}. The last checkpoint is kept; lower the batch size, the max sequence length or r, or use QLoRA, then resume.")
        }
        Error::DeviceLost(_) => format!("{e}. Reload the page, then resume from the last checkpoint."),
        Error::Diverged { .. } => format!("{e}. Lower the learning rate (or check the data), then start again or resume from an earlier checkpoint."),
        Error::InvalidSetting { setting, .. } => format!("{e}. Change the setting \"{setting}\" and try again."),
        _ => e.to_string(),
    }
}

/// The page's KV cache: the model's context, at most 2048 tokens.
fn model_ctx(cfg: &Config) -> usize {
    cfg.max_seq_len.clamp(1, 2048)
}
