//! `hearth train`: LoRA / QLoRA fine-tuning with a progress bar, metrics.jsonl,
//! evaluation and early stopping, atomic checkpoints, exact resume and Ctrl-C → checkpoint.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use hearth_core::io::hf_export::tokenizer_config_json;
use hearth_core::lora::{peft, Adapter};
use hearth_core::model::chat::Message;
use hearth_core::model::{Model, ModelOptions, Tokenizer};
use hearth_core::train::data::{parse_records, DataStats, Record};
use hearth_core::train::run::{Event, Run};
use hearth_core::{Error, GpuContext};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::export::write_atomic;
use crate::generate::{answer, SamplingArgs};
use crate::load::{load, read_adapter, ModelArgs};
use crate::settings_args::SettingsArgs;

pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(parse_records(&path.display().to_string(), &text)?)
}

/// A line about prepared data; `unit`: "examples", or "pairs" for preference data.
pub fn describe(what: &str, unit: &str, s: &DataStats, max_seq_len: usize) -> String {
    let mut line = format!("{what}: {} {unit}, {} tokens, {} with loss", s.examples, s.tokens, s.loss_tokens);
    if s.truncated > 0 {
        line += &format!("; {} truncated at --max-seq-len {max_seq_len}", s.truncated);
    }
    if s.dropped > 0 {
        line += &format!("; {} dropped (no {} tokens left)", s.dropped, if unit == "pairs" { "completion" } else { "response" });
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
    pub settings: SettingsArgs,
    /// A separate validation file (instead of --val-split).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
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
    for (name, bytes) in peft::files(adapter, base)? {
        write_atomic(&out.join(name), &bytes)?;
    }
    write_atomic(&out.join("tokenizer.json"), tok.to_json()?.as_bytes())?;
    write_atomic(&out.join("tokenizer_config.json"), &serde_json::to_vec_pretty(&tokenizer_config_json(tok)).expect("json"))
}

/// Where the CLI keeps a run's output: checkpoint folders and metrics.jsonl under --out.
struct Store<'a> {
    args: &'a TrainArgs,
    metrics: std::fs::File,
    /// checkpoint-N folders on disk, oldest first.
    checkpoints: Vec<PathBuf>,
}

impl Store<'_> {
    fn log(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{v}").and_then(|_| self.metrics.flush()).context("metrics.jsonl")
    }

    fn save_checkpoint(&mut self, ctx: &GpuContext, run: &mut Run) -> Result<PathBuf> {
        let files = pollster::block_on(run.checkpoint(ctx))?;
        let dir = self.args.out.join(format!("checkpoint-{}", run.step()));
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

/// Greedy answers to `prompts`, each as a new chat (with the run's thinking choice).
fn compare_answers(ctx: &GpuContext, model: &mut Model, tok: &Tokenizer, prompts: &[String], max_new_tokens: usize, thinking: &str) -> Result<Vec<String>> {
    let greedy = SamplingArgs {
        max_new_tokens,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        repetition_penalty: 1.0,
        seed: 0,
        stop: Vec::new(),
        thinking: thinking.to_string(),
    };
    prompts.iter().map(|p| answer(ctx, model, tok, &[Message::new("user", p)], &greedy)).collect()
}

pub fn run(args: TrainArgs) -> Result<()> {
    // Every setting is checked before anything loads.
    args.settings.0.train_config()?;
    let mut model_args = args.model.clone();
    if args.settings.0.quant()?.is_some() {
        // qlora: the QLoRA format, unless --quant names one
        model_args.quant.get_or_insert_with(|| args.settings.0.qlora_format.clone());
    }
    model_args.adapter = None; // applied below as the starting adapter
    let ctx = crate::open_gpu()?;
    let loaded = load(&model_args)?;
    let tok = loaded.tokenizer;
    let mcfg = loaded.cfg.clone();
    eprintln!("model: {} {} layers, C {}, vocab {} — {}", mcfg.arch.name(), mcfg.n_layers, mcfg.hidden_size, mcfg.vocab_size, loaded.description);

    let spec = args.settings.0.run_spec(&tok)?;
    let records = read_records(&args.data)?;
    let val_records = args.val_data.as_deref().map(read_records).transpose()?;
    let max_seq = args.model.ctx.min(mcfg.max_seq_len).max(1);
    let mut model = Model::new(&ctx, &mcfg, loaded.weights, ModelOptions { chunk: 256, max_seq, max_binding: None })?;
    let start = match &args.model.adapter {
        Some(dir) => {
            eprintln!("starting from the adapter in {}", dir.display());
            Some(read_adapter(dir, &mcfg)?)
        }
        None => None,
    };
    // "before": where training starts, the starting adapter included
    model.set_adapter(&ctx, start.clone(), "the starting adapter")?;
    let before = compare_answers(&ctx, &mut model, &tok, &args.compare, args.compare_max_tokens, &args.settings.0.thinking)?;
    model.set_adapter(&ctx, None, "")?;
    let base = args.model.model.display().to_string();
    let max_seq_len = spec.data.max_seq_len;
    let template = spec.data.template.name().replace('\n', "\\n");
    let unit = if spec.train.objective.is_preference() { "pairs" } else { "examples" };
    if spec.train.objective.needs_reference() {
        eprintln!("reference: {}", if start.is_some() { "the starting adapter, frozen" } else { "the base model (the adapter switched off)" });
    }
    let mut run = Run::new(&ctx, model, &tok, spec, records, val_records, start, &base)?;
    eprintln!("{} (template {template})", describe("train data", unit, &run.train_stats, max_seq_len));
    if let Some(s) = &run.val_stats {
        eprintln!("{}", describe("validation data", unit, s, max_seq_len));
    }
    let t = &run.trainer;
    println!("{}", t.model.adapter.as_ref().expect("set by the run").adapter.trainable_line(mcfg.param_count()));
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
        run.resume(&ctx, &dir.display().to_string(), &read)?;
        eprintln!("resumed from {} at step {}", dir.display(), run.step());
    }
    let metrics_path = args.out.join("metrics.jsonl");
    if args.resume.is_some() {
        keep_metrics_through(&metrics_path, run.step())?;
    }
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(args.resume.is_some())
        .write(true)
        .truncate(args.resume.is_none())
        .open(&metrics_path)
        .with_context(|| metrics_path.display().to_string())?;
    let mut store = Store { args: &args, metrics, checkpoints: existing_checkpoints(&args.out) };

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

    let total = run.trainer.total_steps;
    let bar = ProgressBar::new(total as u64).with_position(run.step() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]").expect("template"));
    while !run.finished() {
        let started = Instant::now();
        let events = pollster::block_on(run.advance(&ctx)).inspect_err(|_| bar.abandon())?;
        for event in events {
            match event {
                Event::Step(s) => {
                    let tps = s.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    bar.set_position(s.step as u64);
                    let mut line = format!("loss {:.4}  lr {:.2e}  {:.0} tok/s", s.loss, s.lr, tps);
                    if let Some(p) = &s.preference {
                        line += &format!("  margin {:.3}  accuracy {:.2}", p.margin, p.accuracy);
                    }
                    if bar.is_hidden() {
                        // not a terminal (a log file, CI): one line per step instead of the bar
                        eprintln!("step {}/{total}: {line}", s.step);
                    }
                    bar.set_message(line);
                    let mut row = json!({"step": s.step, "epoch": s.epoch, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "tokens_per_s": tps});
                    if let Some(p) = &s.preference {
                        row.as_object_mut().expect("an object").extend(p.to_json(""));
                    }
                    store.log(row)?;
                }
                Event::Eval { step, stats, .. } => {
                    let mut row = json!({"step": step, "eval_loss": stats.loss, "eval_perplexity": stats.perplexity});
                    let mut line = format!("step {step}: eval loss {:.4}, perplexity {:.3}", stats.loss, stats.perplexity);
                    if let Some(p) = &stats.preference {
                        row.as_object_mut().expect("an object").extend(p.to_json("eval_"));
                        line = format!("step {step}: eval loss {:.4}, reward margin {:.3}, accuracy {:.2} (chosen perplexity {:.3})", stats.loss, p.margin, p.accuracy, stats.perplexity);
                    }
                    store.log(row)?;
                    say(&bar, line);
                }
                Event::EarlyStop { evals_since_best, .. } => {
                    say(&bar, format!("early stop: {evals_since_best} evaluations without improvement"));
                }
                Event::CheckpointDue { .. } => {
                    store.save_checkpoint(&ctx, &mut run)?;
                }
                Event::Diverged { step, detail, last_good_checkpoint } => {
                    bar.abandon();
                    return Err(diverged(step, detail, last_good_checkpoint, &args.out));
                }
                Event::Done { .. } => {}
            }
        }
        if stop.load(Ordering::SeqCst) {
            let dir = store.save_checkpoint(&ctx, &mut run)?;
            bar.abandon();
            eprintln!("interrupted: checkpoint written to {} (continue with --resume {})", dir.display(), dir.display());
            std::process::exit(130);
        }
    }
    bar.finish();
    let adapter = pollster::block_on(run.final_adapter(&ctx))?;
    save_adapter(&args.out, &adapter, &base, &tok)?;
    eprintln!("adapter saved to {} (PEFT format; use --adapter {} with score, generate, chat, eval, merge)", args.out.display(), args.out.display());
    if !args.compare.is_empty() {
        let after = compare_answers(&ctx, &mut run.trainer.model, &tok, &args.compare, args.compare_max_tokens, &args.settings.0.thinking)?;
        for ((p, b), a) in args.compare.iter().zip(&before).zip(&after) {
            println!("\n\u{25b6} {p}\n  before: {}\n  after:  {}", b.trim(), a.trim());
        }
    }
    Ok(())
}

/// The error for a diverged run, with the checkpoint to continue from.
fn diverged(step: usize, detail: String, last_good: Option<usize>, out: &Path) -> anyhow::Error {
    let dir = last_good.map(|s| out.join(format!("checkpoint-{s}"))).filter(|d| d.exists());
    let at = match dir {
        Some(d) => format!("the last good checkpoint is {} (continue from it with --resume)", d.display()),
        None => "no good checkpoint had been written (--save-steps writes them)".into(),
    };
    anyhow::Error::new(Error::Diverged { step, detail }).context(at)
}

/// A line above the progress bar, or on stderr when the bar is hidden (not a terminal).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
