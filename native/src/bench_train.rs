//! `hearth bench train`: training tokens/s, the step's host and GPU time, its launches and
//! the GPU memory of a model on synthetic examples.

use anyhow::Result;
use std::time::Instant;

use clap::Args;
use hearth_core::lora::{Adapter, LoraConfig, Target};
use hearth_core::model::ModelOptions;
use hearth_core::ops::matmul::{matmul, Accumulate, MatmulDims, MatmulKind};
use hearth_core::rng::Rng;
use hearth_core::train::data::Example;
use hearth_core::train::trainer::{parse_checkpointing, TrainConfig, Trainer};
use serde_json::json;

use crate::bench::{adapter_json, grids_json, kernels_json, random, time};
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
    /// The share of each example's tokens that come first and carry no loss, as a prompt's
    /// (0: every token carries loss, as on PEFT's side of bench/gpu.sh).
    #[arg(long, default_value_t = 0.0)]
    pub prompt_share: f64,
    /// Timed steps (after the warm-up steps).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Untimed steps first (the first compiles every pipeline).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 16)]
    pub r: usize,
    #[arg(long, default_value = "all-linear")]
    pub targets: String,
    /// auto, on or off.
    #[arg(long, default_value = "auto")]
    pub gradient_checkpointing: String,
    /// Also time each kernel: timestamps on either side of every launch of the timed steps,
    /// in the step, where the adapter has them inside compute passes (Vulkan, Metal, DX12);
    /// else every launch run and waited for alone (the step's own figures then include those
    /// waits).
    #[arg(long)]
    pub kernel_times: bool,
    #[command(flatten)]
    pub stats: crate::kernel_stats::KernelStatsArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: BenchTrainArgs) -> Result<()> {
    let ctx = crate::open_gpu()?;
    let loaded = load(&a.model)?;
    let cfg = loaded.cfg.clone();
    let base_format = loaded.description.clone();
    let model = hearth_core::model::Model::new(&ctx, &cfg, loaded.weights, ModelOptions { chunk: 16, max_seq: 16, max_binding: None })?;
    let mut rng = Rng::new(1);
    let n = (a.steps + a.warmup) * a.batch_size;
    anyhow::ensure!((0.0..1.0).contains(&a.prompt_share), "--prompt-share {}: expected a share in [0, 1), so that some tokens carry loss", a.prompt_share);
    let prompt = (a.prompt_share * a.seq_len as f64).round() as usize;
    let examples: Vec<Example> = (0..n)
        .map(|_| Example { tokens: (0..a.seq_len).map(|_| rng.below(cfg.vocab_size) as u32).collect(), loss: (0..a.seq_len).map(|t| t >= prompt).collect() })
        .collect();
    let lora = LoraConfig { r: a.r, alpha: 2.0 * a.r as f32, rslora: false, dropout: 0.05, targets: Target::parse_list(&a.targets)? };
    let checkpointing = parse_checkpointing(&a.gradient_checkpointing).flatten();
    let tc = TrainConfig { lora: lora.clone(), batch_size: a.batch_size, max_steps: Some(a.steps + a.warmup), checkpointing, ..TrainConfig::default() };
    let adapter = Adapter::init(&cfg, &lora, 1)?;
    let mut t = Trainer::new(&ctx, model, adapter, tc, examples, &[])?;
    // The f32 forward matmul at the step's MLP shape (tokens × intermediate × hidden), timed
    // in this process before and after the steps, the faster counting (a machine shared with
    // others is rarely quiet for a whole step): what `matmul_efficiency` divides by. Its
    // buffers are made before the warm-up, so that the timed steps get the pooled buffers
    // (and cached bind groups) of the steps before them, as in a training run.
    let (m, nn, k) = (a.batch_size * a.seq_len, cfg.intermediate_size, cfg.hidden_size);
    let (x, w, y) = (random(&ctx, &mut rng, m * k)?, random(&ctx, &mut rng, nn * k)?, random(&ctx, &mut rng, m * nn)?);
    let time_reference = || {
        time(&ctx, 2, crate::bench::BATCH_MS, || matmul(&ctx, MatmulKind::Forward, &y, &x, &w, MatmulDims::new(m, nn, k), Accumulate::OVERWRITE).expect("matmul launch"))
    };
    // every step's loss, the warm-up's too: runs of one model that differ only in their kernels
    // should agree on them (bench/report.py compares them)
    let mut losses = Vec::new();
    for _ in 0..a.warmup {
        losses.push(pollster::block_on(t.step(&ctx))?.loss);
    }
    let ref_before = time_reference()?;
    ctx.profile_begin_with(a.kernel_times);
    let start = Instant::now();
    let mut tokens = 0;
    for _ in 0..a.steps {
        let stats = pollster::block_on(t.step(&ctx))?;
        tokens += stats.tokens;
        losses.push(stats.loss);
    }
    let profile = pollster::block_on(ctx.profile_end())?;
    let secs = start.elapsed().as_secs_f64();
    let steps = a.steps as f64;
    let ms_per_step = secs * 1e3 / steps;
    let peak_mib = ctx.memory().peak_bytes as f64 / (1u64 << 20) as f64;
    let matmul_rate = profile.matmul_flops() / secs;
    let ref_after = time_reference()?;
    let (ref_ms, ref_kernels) = if ref_after.0 < ref_before.0 { ref_after } else { ref_before };
    let ref_rate = 2.0 * (m * nn * k) as f64 / (ref_ms / 1e3);
    let gpu_ms = profile.gpu_ms.map(|g| g / steps);
    let kernel_stats = a.stats.collect(&ctx, &ctx.kernels_made())?;
    if a.json {
        let out = json!({
            "bench": "train",
            "adapter": adapter_json(&ctx),
            "model": { "path": a.model.model.display().to_string(), "arch": cfg.arch.name(), "layers": cfg.n_layers, "hidden": cfg.hidden_size, "base": base_format, "quant": a.model.quant },
            "settings": { "batch_size": a.batch_size, "seq_len": a.seq_len, "prompt_share": a.prompt_share, "r": a.r, "targets": a.targets, "checkpointing": t.checkpointing(), "steps": a.steps, "warmup": a.warmup },
            "tokens_per_s": tokens as f64 / secs,
            "ms_per_step": ms_per_step,
            "host_ms_per_step": profile.host_ms / steps,
            "gpu_ms_per_step": gpu_ms,
            "gpu_busy": gpu_ms.map(|g| g / ms_per_step),
            "gpu_time_note": profile.gpu_time_note,
            "dispatches_per_step": profile.dispatches as f64 / steps,
            "submissions_per_step": profile.submissions as f64 / steps,
            "bind_groups_created_per_step": profile.bind_groups_created as f64 / steps,
            "buffers_created_per_step": profile.buffers_created as f64 / steps,
            "peak_gpu_memory_mib": peak_mib,
            "matmul_gflop_per_step": profile.matmul_flops() / steps / 1e9,
            "matmul_gflops": matmul_rate / 1e9,
            "reference_matmul": { "m": m, "n": nn, "k": k, "kernels": ref_kernels, "gflops": ref_rate / 1e9 },
            "matmul_efficiency": matmul_rate / ref_rate,
            "kernels": kernels_json(&profile, steps),
            "launch_grids": grids_json(&profile, steps),
            "kernel_timing": profile.kernel_times.map(|t| t.describe()),
            "losses": losses,
            "kernel_stats": kernel_stats,
        });
        println!("{out}");
        return Ok(());
    }
    println!("adapter        {}", ctx.summary());
    println!("model          {} ({} layers, C {}, {})", a.model.model.display(), cfg.n_layers, cfg.hidden_size, base_format);
    println!("batch          {} × {} tokens ({prompt} without loss), r {}, targets {}, checkpointing {}", a.batch_size, a.seq_len, a.r, a.targets, if t.checkpointing() { "on" } else { "off" });
    println!("train          {:.1} tokens/s ({:.1} ms/step over {} steps)", tokens as f64 / secs, ms_per_step, a.steps);
    println!("host           {:.1} ms/step recording and submitting {:.0} launches in {:.0} submissions", profile.host_ms / steps, profile.dispatches as f64 / steps, profile.submissions as f64 / steps);
    println!("created        {:.0} bind groups and {:.0} buffers per step after the warm-up", profile.bind_groups_created as f64 / steps, profile.buffers_created as f64 / steps);
    match gpu_ms {
        Some(g) => println!("GPU            {g:.1} ms/step busy ({:.0} % of the step)", 100.0 * g / ms_per_step),
        None => println!("GPU            not timed: {}", profile.gpu_time_note.as_deref().unwrap_or("")),
    }
    println!("matmuls        {:.1} GFLOP/step at {:.1} GFLOP/s; f32 forward M{m} N{nn} K{k} alone {:.1} GFLOP/s: efficiency {:.2}", profile.matmul_flops() / steps / 1e9, matmul_rate / 1e9, ref_rate / 1e9, matmul_rate / ref_rate);
    println!("GPU memory     {peak_mib:.0} MiB peak");
    println!("loss           {}", losses.iter().map(|l| format!("{l:.4}")).collect::<Vec<_>>().join(" → "));
    if a.kernel_times {
        crate::bench::print_kernel_times(&profile, steps);
    }
    if let Some(stats) = &kernel_stats {
        crate::kernel_stats::print_kernel_stats(stats);
    }
    Ok(())
}
