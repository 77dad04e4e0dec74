//! `hearth bench train`: training tokens/s and GPU memory of a model on synthetic examples.

use anyhow::Result;
use std::time::Instant;

use clap::Args;
use hearth_core::lora::{Adapter, LoraConfig, Target};
use hearth_core::model::ModelOptions;
use hearth_core::rng::Rng;
use hearth_core::train::data::Example;
use hearth_core::train::trainer::{parse_checkpointing, TrainConfig, Trainer};

use crate::load::{load, ModelArgs};

#[derive(Args)]
pub struct BenchTrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens per example.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    #[arg(long, default_value_t = 16)]
    pub r: usize,
    #[arg(long, default_value = "all-linear")]
    pub targets: String,
    /// auto, on or off.
    #[arg(long, default_value = "auto")]
    pub gradient_checkpointing: String,
}

pub fn run(a: BenchTrainArgs) -> Result<()> {
    let ctx = crate::open_gpu()?;
    let loaded = load(&a.model)?;
    let cfg = loaded.cfg.clone();
    let model = hearth_core::model::Model::new(&ctx, &cfg, loaded.weights, ModelOptions { chunk: 16, max_seq: 16, max_binding: None })?;
    let mut rng = Rng::new(1);
    let n = (a.steps + 1) * a.batch_size;
    let examples: Vec<Example> = (0..n)
        .map(|_| Example { tokens: (0..a.seq_len).map(|_| rng.below(cfg.vocab_size) as u32).collect(), loss: vec![true; a.seq_len] })
        .collect();
    let lora = LoraConfig { r: a.r, alpha: 2.0 * a.r as f32, rslora: false, dropout: 0.05, targets: Target::parse_list(&a.targets)? };
    let checkpointing = parse_checkpointing(&a.gradient_checkpointing).flatten();
    let tc = TrainConfig { lora: lora.clone(), batch_size: a.batch_size, max_steps: Some(a.steps + 1), checkpointing, ..TrainConfig::default() };
    let adapter = Adapter::init(&cfg, &lora, 1)?;
    let mut t = Trainer::new(&ctx, model, adapter, tc, examples, &[])?;
    pollster::block_on(t.step(&ctx))?; // compiles the pipelines
    let start = Instant::now();
    let mut tokens = 0;
    for _ in 0..a.steps {
        tokens += pollster::block_on(t.step(&ctx))?.tokens;
    }
    let secs = start.elapsed().as_secs_f64();
    let mem = ctx.memory();
    println!("adapter        {}", ctx.summary());
    println!("model          {} ({} layers, C {})", a.model.model.display(), cfg.n_layers, cfg.hidden_size);
    println!("batch          {} × {} tokens, r {}, targets {}, checkpointing {}", a.batch_size, a.seq_len, a.r, a.targets, if t.checkpointing() { "on" } else { "off" });
    println!("train          {:.1} tokens/s ({:.2} s/step over {} steps)", tokens as f64 / secs, secs / a.steps as f64, a.steps);
    println!("GPU memory     {:.0} MiB peak", mem.peak_bytes as f64 / (1u64 << 20) as f64);
    Ok(())
}
