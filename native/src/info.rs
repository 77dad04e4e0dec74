//! `hearth info`: what a model is, what its weights take in each format, and an estimate of
//! the memory LoRA and QLoRA training would need.

use anyhow::Result;
use std::path::PathBuf;

use clap::Args;
use hearth_core::lora::LoraConfig;
use hearth_core::model::WeightFormat;
use hearth_core::quant::QuantFormat;
use hearth_core::train::memory::{base_bytes, batch_sequences, estimate, lora_params, ModelShape, DEFAULT_BINDING_LIMIT};
use hearth_core::train::settings::RunSettings;

use crate::load::load_config;

#[derive(Args)]
#[command(after_help = "Examples:\n  hearth info model.gguf\n  hearth info ./Qwen2.5-0.5B-Instruct --seq-len 1024 --batch-size 4 --rank 16")]
pub struct InfoArgs {
    /// An HF model folder or a .gguf file.
    pub model: PathBuf,
    /// Tokens per training sequence, for the memory estimate.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Sequences per step, for the memory estimate (pairs with --objective dpo or orpo).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// sft, or dpo / orpo: a batch of pairs, each a chosen and a rejected sequence.
    #[arg(long, default_value = "sft", value_parser = ["sft", "dpo", "orpo"])]
    pub objective: String,
    /// LoRA rank, for the memory estimate (all linear layers).
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// The KV cache the run holds, as `hearth train --ctx` (capped at the model's context).
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
}

fn mib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    }
}

pub fn run(a: InfoArgs) -> Result<()> {
    let (cfg, kind, head) = load_config(&a.model)?;
    println!("model:          {} ({kind})", a.model.display());
    println!("architecture:   {}", cfg.arch.name());
    println!("layers:         {}", cfg.n_layers);
    println!("hidden size:    {} (MLP {})", cfg.hidden_size, cfg.intermediate_size);
    println!("heads:          {} query, {} key/value, head size {}", cfg.n_heads, cfg.n_kv_heads, cfg.head_size);
    println!("vocabulary:     {}{}", cfg.vocab_size, if cfg.tie_embeddings { " (embedding tied to the lm_head)" } else { "" });
    println!("rope theta:     {}   rms eps: {:e}   context: {}", cfg.rope_theta, cfg.rms_norm_eps, cfg.max_seq_len);
    println!("parameters:     {} ({:.1} M)", cfg.param_count(), cfg.param_count() as f64 / 1e6);
    let features = cfg.features();
    if !features.is_empty() {
        println!("features:       {}", features.join("; "));
    }
    println!();
    println!("weights on the GPU (linear layers converted; the lm_head as the file holds it ({}), norms in f32):", head.name());
    let formats = [
        WeightFormat::F32,
        WeightFormat::Quant(QuantFormat::F16),
        WeightFormat::Quant(QuantFormat::Q8_0),
        WeightFormat::Quant(QuantFormat::Q4_1),
        WeightFormat::Quant(QuantFormat::Q4_0),
        WeightFormat::Quant(QuantFormat::Nf4),
    ];
    for f in formats {
        println!("  {:5} {:>12}", f.name(), mib(base_bytes(&cfg, f, head) as f64));
    }
    // Training estimate: frozen base + LoRA (params, grads, AdamW m and v in f32) + what the
    // training pass allocates (activations kept for every layer, or with checkpointing one
    // layer's worth plus each layer's input; scratch; a chunk of logits).
    let objective = RunSettings { objective: a.objective.clone(), ..RunSettings::default() }.objective()?;
    let preference = objective.is_preference();
    let sequences = batch_sequences(&objective, a.batch_size);
    let tokens = a.seq_len * sequences;
    // as hearth train holds the model: chunks of 256 tokens, a KV cache of --ctx tokens
    let shape = ModelShape { head_format: head, chunk: 256, ctx_tokens: a.ctx.min(cfg.max_seq_len).max(1), binding_limit: DEFAULT_BINDING_LIMIT };
    let lora = LoraConfig { r: a.rank, ..LoraConfig::default() };
    println!();
    println!(
        "training estimate at --seq-len {} --batch-size {}{}, LoRA r={} on all linear layers ({} trainable params):",
        a.seq_len,
        a.batch_size,
        if preference { format!(" pairs ({sequences} sequences; {} takes no second copy of the weights)", a.objective) } else { String::new() },
        a.rank,
        lora_params(&cfg, a.rank, &lora.targets)
    );
    for (name, f) in [("LoRA (f32 base)", WeightFormat::F32), ("LoRA (f16 base)", WeightFormat::Quant(QuantFormat::F16)), ("QLoRA (nf4 base)", WeightFormat::Quant(QuantFormat::Nf4))] {
        println!(
            "  {name:17} {:>11} without checkpointing, {:>11} with",
            mib(estimate(&cfg, f, &lora, tokens, false, shape).total() as f64),
            mib(estimate(&cfg, f, &lora, tokens, true, shape).total() as f64)
        );
    }
    if a.objective == "dpo" {
        let copy = 4.0 * lora_params(&cfg, a.rank, &lora.targets) as f64;
        println!("  DPO from a starting adapter (--adapter) adds its frozen copy, the reference: {}", mib(copy));
    }
    Ok(())
}
