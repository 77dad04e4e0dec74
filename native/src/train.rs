//! `hearth train`: LoRA / QLoRA fine-tuning with a progress bar, metrics.jsonl,
//! evaluation and early stopping, atomic checkpoints, exact resume and Ctrl-C → checkpoint.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use hearth_core::io::hf_export::tokenizer_config_json;
use hearth_core::lora::{peft, Adapter, LoraConfig, Target};
use hearth_core::model::chat::Message;
use hearth_core::model::{Model, ModelOptions, Tokenizer};
use hearth_core::ops::adamw::AdamwConfig;
use hearth_core::train::checkpoint;
use hearth_core::train::data::{parse_records, prepare, split_records, DataOptions, DataStats, Example, Record, Template};
use hearth_core::train::schedule::Schedule;
use hearth_core::train::trainer::{parse_checkpointing, TrainConfig, Trainer};
use hearth_core::{Error, GpuContext};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::export::write_atomic;
use crate::generate::{answer, SamplingArgs};
use crate::load::{load, read_adapter, ModelArgs};

/// How records become tokens (shared with `hearth eval`).
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// alpaca, chatml, model (the model's chat template) or a custom template with {field}
    /// placeholders whose last placeholder is the response, e.g.
    /// "### 指令：\n{instruction}\n\n### 回應：\n{output}" (default: model when the model has a
    /// chat template, else alpaca).
    #[arg(long)]
    pub template: Option<String>,
    /// Examples longer than this many tokens are cut (and counted).
    #[arg(long, default_value_t = 512)]
    pub max_seq_len: usize,
    /// Compute the loss on the prompt tokens too (default: the response only).
    #[arg(long)]
    pub train_on_prompt: bool,
}

impl DataArgs {
    pub fn options(&self, tok: &Tokenizer) -> DataOptions {
        let template = match &self.template {
            Some(t) => Template::parse(t),
            None if tok.chat_template.is_some() => Template::Model,
            None => Template::Alpaca,
        };
        DataOptions { template, max_seq_len: self.max_seq_len.max(2), train_on_prompt: self.train_on_prompt }
    }
}

pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(parse_records(&path.display().to_string(), &text)?)
}

pub fn describe(what: &str, s: &DataStats, max_seq_len: usize) -> String {
    let mut line = format!("{what}: {} examples, {} tokens, {} with loss", s.examples, s.tokens, s.loss_tokens);
    if s.truncated > 0 {
        line += &format!("; {} truncated at --max-seq-len {max_seq_len}", s.truncated);
    }
    if s.dropped > 0 {
        line += &format!("; {} dropped (no response tokens left)", s.dropped);
    }
    line
}

#[derive(Args, Clone, Debug)]
#[command(after_help = "Examples:
  hearth train SmolLM2-135M-Instruct.Q4_1.gguf --data faq.jsonl --out runs/faq
  hearth train ./Qwen2.5-0.5B-Instruct --method qlora --data chat.json --template model --r 16 --alpha 32 \\
      --targets all-linear --lr 2e-4 --schedule cosine --warmup-ratio 0.03 --epochs 3 --val-split 0.1 \\
      --eval-steps 20 --patience 3 --save-steps 50 --out runs/chat
  hearth train model.gguf --data faq.jsonl --out runs/faq --resume runs/faq/checkpoint-50

Data: .jsonl or a .json array of records with instruction/input/output, prompt/completion,
messages ([{role, content}]) or text. The output folder gets the adapter in PEFT's format
(adapter_config.json, adapter_model.safetensors), the tokenizer, metrics.jsonl and checkpoints.")]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data (.jsonl or .json).
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "hearth-out")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data_opts: DataArgs,
    /// lora keeps the base in the file's precision; qlora quantizes it to NF4 (with double
    /// quantization) unless --quant names another format.
    #[arg(long, default_value = "lora")]
    pub method: String,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub r: usize,
    /// LoRA alpha: the update is scaled by alpha/r.
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f32,
    /// Scale by alpha/√r (rsLoRA).
    #[arg(long)]
    pub rslora: bool,
    /// Dropout on the adapter's input.
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f32,
    /// Layers to adapt: all-linear, or names from q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.
    #[arg(long, default_value = "all-linear")]
    pub targets: String,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f32,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f32,
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f32,
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f32,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// constant, linear or cosine (after the warmup).
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// Warmup in optimizer steps (overrides --warmup-ratio).
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Warmup as a fraction of all steps.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_ratio: f32,
    /// Examples per micro-batch (concatenated without padding).
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 3.0)]
    pub epochs: f32,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f32,
    /// Recompute activations per layer in the backward: auto (on when the activations would
    /// pass --memory-budget-gb), on or off.
    #[arg(long, default_value = "auto")]
    pub gradient_checkpointing: String,
    /// Activation memory above which auto turns gradient checkpointing on.
    #[arg(long, default_value_t = 4.0)]
    pub memory_budget_gb: f32,
    /// Seeds the adapter's initialization, the data order, dropout and the validation split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Hold out this fraction of the records for validation.
    #[arg(long, default_value_t = 0.0, conflicts_with = "val_data")]
    pub val_split: f32,
    /// A separate validation file.
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Evaluate every this many steps (default: every epoch, when there is validation data).
    #[arg(long)]
    pub eval_steps: Option<usize>,
    /// Stop when this many evaluations in a row do not improve the best validation loss
    /// (the best adapter is the one saved).
    #[arg(long)]
    pub patience: Option<usize>,
    /// Write a checkpoint every this many steps.
    #[arg(long)]
    pub save_steps: Option<usize>,
    /// Keep at most this many checkpoints (oldest removed first).
    #[arg(long)]
    pub save_total_limit: Option<usize>,
    /// Continue a run from one of its checkpoints (same data and settings).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// A prompt to answer (chat template, greedy) before and after training; may be repeated.
    #[arg(long = "compare")]
    pub compare: Vec<String>,
    /// Most tokens of each --compare answer.
    #[arg(long, default_value_t = 80)]
    pub compare_max_tokens: usize,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let targets = Target::parse_list(&self.targets)?;
        let checkpointing = parse_checkpointing(&self.gradient_checkpointing)
            .with_context(|| format!("--gradient-checkpointing {}: expected auto, on or off", self.gradient_checkpointing))?;
        if self.batch_size == 0 || self.grad_accum == 0 {
            bail!("--batch-size and --grad-accum must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr {} must be a positive number", self.lr);
        }
        Ok(TrainConfig {
            lora: LoraConfig { r: self.r, alpha: self.alpha, rslora: self.rslora, dropout: self.dropout, targets },
            adamw: AdamwConfig { lr: self.lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps, weight_decay: self.weight_decay },
            max_grad_norm: self.max_grad_norm,
            schedule: Schedule::parse(&self.schedule)?,
            warmup_steps: self.warmup_steps,
            warmup_ratio: self.warmup_ratio,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            epochs: self.epochs,
            max_steps: self.max_steps,
            seed: self.seed,
            checkpointing,
            memory_budget: (self.memory_budget_gb as f64 * (1u64 << 30) as f64) as u64,
        })
    }
}

/// Writes a folder's files into `dir` through `dir.tmp-hearth` and a rename, so that the
/// folder is either complete or absent.
fn write_folder_atomic(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let tmp = dir.with_extension("tmp-hearth");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| tmp.display().to_string())?;
    for (name, bytes) in files {
        std::fs::write(tmp.join(name), bytes).with_context(|| tmp.join(name).display().to_string())?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::rename(&tmp, dir).with_context(|| dir.display().to_string())
}

/// The adapter files and the tokenizer's, written into `out` (each file atomically).
fn save_adapter(out: &Path, adapter: &Adapter, base: &str, tok: &Tokenizer) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let config = serde_json::to_vec_pretty(&peft::config_json(adapter, base)).expect("json");
    write_atomic(&out.join(peft::WEIGHTS_FILE), &peft::weights_bytes(adapter)?)?;
    write_atomic(&out.join(peft::CONFIG_FILE), &config)?;
    write_atomic(&out.join("tokenizer.json"), tok.to_json()?.as_bytes())?;
    write_atomic(&out.join("tokenizer_config.json"), &serde_json::to_vec_pretty(&tokenizer_config_json(tok)).expect("json"))
}

struct Run<'a> {
    ctx: &'a GpuContext,
    args: &'a TrainArgs,
    tok: &'a Tokenizer,
    base: String,
    train_examples: usize,
    metrics: std::fs::File,
    checkpoints: Vec<PathBuf>,
}

impl Run<'_> {
    fn log(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{v}").and_then(|_| self.metrics.flush()).context("metrics.jsonl")
    }

    fn save_checkpoint(&mut self, t: &mut Trainer) -> Result<PathBuf> {
        let adapter = pollster::block_on(t.adapter(self.ctx))?;
        let moments = pollster::block_on(t.optimizer_moments(self.ctx))?;
        let files = checkpoint::files(&adapter, &self.base, &moments, &t.state, &t.cfg, self.train_examples)?;
        let dir = self.args.out.join(format!("checkpoint-{}", t.state.step));
        write_folder_atomic(&dir, &files)?;
        self.checkpoints.retain(|d| d != &dir);
        self.checkpoints.push(dir.clone());
        if let Some(limit) = self.args.save_total_limit {
            while self.checkpoints.len() > limit.max(1) {
                let old = self.checkpoints.remove(0);
                let _ = std::fs::remove_dir_all(&old);
            }
        }
        Ok(dir)
    }
}

/// Drops the lines of metrics.jsonl logged after `step` (a run that went on past the
/// checkpoint it is resumed from), so that each step appears once.
fn keep_metrics_through(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s as usize <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(path, kept.as_bytes())
}

/// The existing checkpoint-N folders of `out`, oldest first.
fn existing_checkpoints(out: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Greedy answers to `prompts`, each as a new chat.
fn compare_answers(ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, prompts: &[String], max_new_tokens: usize) -> Result<Vec<String>> {
    let greedy = SamplingArgs { max_new_tokens, temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0, stop: Vec::new() };
    prompts.iter().map(|p| answer(ctx, model, tok, &[Message::new("user", p)], &greedy)).collect()
}

pub fn run(args: TrainArgs) -> Result<()> {
    let cfg = args.config()?;
    let mut model_args = args.model.clone();
    match args.method.as_str() {
        "lora" => {}
        "qlora" => {
            model_args.quant.get_or_insert_with(|| "nf4".into());
        }
        other => bail!("--method {other}: expected lora or qlora"),
    }
    model_args.adapter = None; // applied below as the starting adapter
    let ctx = crate::open_gpu()?;
    let loaded = load(&model_args)?;
    let tok = loaded.tokenizer;
    let mcfg = loaded.cfg.clone();
    eprintln!("model: {} {} layers, C {}, vocab {} — {}", mcfg.arch.name(), mcfg.n_layers, mcfg.hidden_size, mcfg.vocab_size, loaded.description);

    let data_opts = args.data_opts.options(&tok);
    let records = read_records(&args.data)?;
    let (train_records, mut val_records) = split_records(records, args.val_split, args.seed);
    if let Some(v) = &args.val_data {
        val_records = read_records(v)?;
    }
    let (train, stats) = prepare(&train_records, &tok, &data_opts).with_context(|| args.data.display().to_string())?;
    eprintln!("{} (template {})", describe("train data", &stats, data_opts.max_seq_len), data_opts.template.name().replace('\n', "\\n"));
    let val: Vec<Example> = if val_records.is_empty() {
        Vec::new()
    } else {
        let (v, s) = prepare(&val_records, &tok, &data_opts).context("validation data")?;
        eprintln!("{}", describe("validation data", &s, data_opts.max_seq_len));
        v
    };

    let max_seq = args.model.ctx.min(mcfg.max_seq_len).max(1);
    let mut model = Model::new(&ctx, &mcfg, loaded.weights, ModelOptions { chunk: 256, max_seq, max_binding: None })?;
    let before = compare_answers(&ctx, &mut model, &tok, &args.compare, args.compare_max_tokens)?;
    let adapter = match &args.model.adapter {
        Some(dir) => {
            eprintln!("starting from the adapter in {}", dir.display());
            read_adapter(dir)?
        }
        None => Adapter::init(&mcfg, &cfg.lora, args.seed)?,
    };
    println!("{}", adapter.trainable_line(mcfg.param_count()));
    let train_examples = train.len();
    let mut t = Trainer::new(&ctx, model, adapter, cfg, train, &[&val])?;
    eprintln!(
        "steps: {} ({} per epoch), warmup {}, micro-batches of ≤ {} tokens, gradient checkpointing {}",
        t.total_steps,
        t.steps_per_epoch(),
        t.warmup,
        t.max_tokens(),
        if t.checkpointing() { "on" } else { "off" }
    );

    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    if let Some(dir) = &args.resume {
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| Error::io(dir.join(name).display(), e));
        let r = checkpoint::read(&dir.display().to_string(), &read, &t.cfg, train_examples)?;
        t.restore(&ctx, &r.adapter, &r.moments, r.state)?;
        eprintln!("resumed from {} at step {}", dir.display(), t.state.step);
    }
    let metrics_path = args.out.join("metrics.jsonl");
    if args.resume.is_some() {
        keep_metrics_through(&metrics_path, t.state.step)?;
    }
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(args.resume.is_some())
        .write(true)
        .truncate(args.resume.is_none())
        .open(&metrics_path)
        .with_context(|| metrics_path.display().to_string())?;
    let mut run = Run { ctx: &ctx, args: &args, tok: &tok, base: args.model.model.display().to_string(), train_examples, metrics, checkpoints: existing_checkpoints(&args.out) };

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        // a second Ctrl-C while the checkpoint is written falls through to the default
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }

    let bar = ProgressBar::new(t.total_steps as u64).with_position(t.state.step as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]").expect("template"));
    let mut best: Option<Adapter> = None;
    let mut early_stopped = false;
    while !t.done() {
        let started = Instant::now();
        let s = match pollster::block_on(t.step(&ctx)) {
            Ok(s) => s,
            Err(e) => {
                bar.abandon();
                return Err(failure(e, &t, &run.checkpoints));
            }
        };
        let tps = s.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(s.step as u64);
        let line = format!("loss {:.4}  lr {:.2e}  {:.0} tok/s", s.loss, s.lr, tps);
        if bar.is_hidden() {
            // not a terminal (a log file, CI): one line per step instead of the bar
            eprintln!("step {}/{}: {line}", s.step, t.total_steps);
        }
        bar.set_message(line);
        run.log(json!({"step": s.step, "epoch": s.epoch, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "tokens_per_s": tps}))?;
        if !val.is_empty() && t.eval_due(args.eval_steps) {
            let e = match pollster::block_on(t.evaluate(&ctx, &val)) {
                Ok(e) => e,
                Err(e) => {
                    bar.abandon();
                    return Err(failure(e, &t, &run.checkpoints));
                }
            };
            run.log(json!({"step": s.step, "eval_loss": e.loss, "eval_perplexity": e.perplexity}))?;
            say(&bar, format!("step {}: eval loss {:.4}, perplexity {:.3}", s.step, e.loss, e.perplexity));
            if t.record_eval(e.loss) {
                if args.patience.is_some() {
                    best = Some(pollster::block_on(t.adapter(&ctx))?);
                }
            } else if args.patience.is_some_and(|p| t.state.evals_since_best >= p) {
                say(&bar, format!("early stop: {} evaluations without improvement", t.state.evals_since_best));
                early_stopped = true;
            }
        }
        if args.save_steps.is_some_and(|n| s.step % n.max(1) == 0) {
            run.save_checkpoint(&mut t)?;
        }
        if stop.load(Ordering::SeqCst) {
            let dir = run.save_checkpoint(&mut t)?;
            bar.abandon();
            eprintln!("interrupted: checkpoint written to {} (continue with --resume {})", dir.display(), dir.display());
            std::process::exit(130);
        }
        if early_stopped {
            break;
        }
    }
    bar.finish();
    let adapter = match best.filter(|_| early_stopped) {
        Some(b) => b,
        None => pollster::block_on(t.adapter(&ctx))?,
    };
    save_adapter(&args.out, &adapter, &run.base, run.tok)?;
    eprintln!("adapter saved to {} (PEFT format; use --adapter {} with score, generate, chat, eval, merge)", args.out.display(), args.out.display());
    if !args.compare.is_empty() {
        let after = compare_answers(&ctx, &mut t.model, &tok, &args.compare, args.compare_max_tokens)?;
        for ((p, b), a) in args.compare.iter().zip(&before).zip(&after) {
            println!("\n\u{25b6} {p}\n  before: {}\n  after:  {}", b.trim(), a.trim());
        }
    }
    Ok(())
}

/// The error for a failure during training. A NaN or infinite loss or gradient at step k
/// means the weights after step k − 1 already diverged, so the good checkpoints are those
/// before the trainer's current step.
fn failure(e: Error, t: &Trainer, checkpoints: &[PathBuf]) -> anyhow::Error {
    if !matches!(e, Error::Diverged { .. }) {
        return e.into();
    }
    let step_of = |p: &PathBuf| p.file_name()?.to_str()?.strip_prefix("checkpoint-")?.parse::<usize>().ok();
    let good = checkpoints.iter().rfind(|p| step_of(p).is_some_and(|s| s < t.state.step));
    let at = match good {
        Some(d) => format!("the last good checkpoint is {} (continue from it with --resume)", d.display()),
        None => "no good checkpoint had been written (--save-steps writes them)".into(),
    };
    anyhow::Error::new(e).context(at)
}

/// A line above the progress bar, or on stderr when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
