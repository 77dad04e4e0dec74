//! `hearth bench generate`: prefill and decode speed of a real model.

use anyhow::{bail, Result};
use std::time::Instant;

use clap::Args;
use hearth_core::model::sampling::argmax;
use hearth_core::train::memory::base_bytes;
use serde_json::json;

use crate::bench::{adapter_json, kernels_json};
use crate::load::{load_on_gpu, ModelArgs};

#[derive(Args)]
pub struct BenchGenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens in the prompt (prefill).
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Tokens decoded one at a time after it (EOS does not stop the benchmark).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Also time each kernel of the decode loop: every launch is run and waited for alone.
    #[arg(long)]
    pub kernel_times: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

const TEXT: &str = "The history of the city begins with a small settlement on the river, where traders met to exchange grain, salt and cloth. ";

pub fn run(a: BenchGenerateArgs) -> Result<()> {
    let ctx = crate::open_gpu()?;
    let (mut model, tok) = load_on_gpu(&ctx, &a.model, a.prompt_tokens.max(1))?;
    let mut prompt = Vec::new();
    while prompt.len() < a.prompt_tokens {
        prompt.extend(tok.encode(TEXT, false)?);
    }
    prompt.truncate(a.prompt_tokens.max(1));
    if prompt.len() + a.new_tokens > model.cache.capacity {
        bail!("{} + {} tokens do not fit the context of {} (raise --ctx)", prompt.len(), a.new_tokens, model.cache.capacity);
    }
    // warm-up: the whole prompt and a token after it, so that every pipeline and bind group
    // the two phases use exists before they are timed (past 256 tokens of context a decoded
    // token's attention takes launches a shorter one does not)
    block(model.forward(&ctx, &prompt))?;
    block(model.forward(&ctx, &prompt[..1]))?;
    model.reset();
    ctx.profile_begin();
    let start = Instant::now();
    let mut logits = block(model.forward(&ctx, &prompt))?;
    let prefill = start.elapsed().as_secs_f64();
    let prefill_profile = block(ctx.profile_end())?;
    ctx.profile_begin_with(a.kernel_times);
    let start = Instant::now();
    for _ in 0..a.new_tokens {
        let next = argmax(&logits);
        logits = block(model.forward(&ctx, &[next]))?;
    }
    let decode = start.elapsed().as_secs_f64();
    let profile = block(ctx.profile_end())?;
    let per_token = a.new_tokens.max(1) as f64;
    let (linear, head) = model.formats();
    if a.json {
        let out = json!({
            "bench": "generate",
            "adapter": adapter_json(&ctx),
            "model": a.model.model.display().to_string(),
            "quant": a.model.quant,
            "prompt_tokens": prompt.len(),
            "new_tokens": a.new_tokens,
            "prefill_tokens_per_s": prompt.len() as f64 / prefill,
            "decode_tokens_per_s": a.new_tokens as f64 / decode,
            "prefill_dispatches": prefill_profile.dispatches,
            "prefill_host_ms": prefill_profile.host_ms,
            "prefill_gpu_ms": prefill_profile.gpu_ms,
            "prefill_matmul_gflop": prefill_profile.matmul_flops() / 1e9,
            // what a decoded token reads at least, for bench/report.py's bandwidth limit: every
            // weight once, and the KV cache's keys and values of each token of context
            "weight_bytes": base_bytes(&model.cfg, linear, head),
            "kv_bytes_per_context_token": model.cache.bytes() / model.cache.capacity.max(1) as u64,
            "dispatches_per_token": profile.dispatches as f64 / per_token,
            "host_ms_per_token": profile.host_ms / per_token,
            "bind_groups_created_per_token": profile.bind_groups_created as f64 / per_token,
            "buffers_created_per_token": profile.buffers_created as f64 / per_token,
            "gpu_ms_per_token": profile.gpu_ms.map(|g| g / per_token),
            "gpu_time_note": profile.gpu_time_note,
            "kernels": kernels_json(&profile, per_token),
        });
        println!("{out}");
        return Ok(());
    }
    println!("| phase   | tokens | seconds | tokens/s |");
    println!("|---------|-------:|--------:|---------:|");
    println!("| prefill | {:6} | {:7.3} | {:8.1} |", prompt.len(), prefill, prompt.len() as f64 / prefill);
    println!("| decode  | {:6} | {:7.3} | {:8.1} |", a.new_tokens, decode, a.new_tokens as f64 / decode);
    println!(
        "prefill: {} launches, {:.2} ms of host time{}",
        prefill_profile.dispatches,
        prefill_profile.host_ms,
        prefill_profile.gpu_ms.map_or(String::new(), |g| format!(", {g:.2} ms of GPU time"))
    );
    println!(
        "decode: {:.0} launches and {:.2} ms of host time per token{}; {} bind groups and {} buffers created in all",
        profile.dispatches as f64 / per_token,
        profile.host_ms / per_token,
        profile.gpu_ms.map_or(String::new(), |g| format!(", {:.2} ms of GPU time", g / per_token)),
        profile.bind_groups_created,
        profile.buffers_created
    );
    if a.kernel_times {
        crate::bench::print_kernel_times(&profile, per_token);
    }
    Ok(())
}

fn block<T>(f: impl std::future::Future<Output = hearth_core::Result<T>>) -> Result<T> {
    Ok(pollster::block_on(f)?)
}
