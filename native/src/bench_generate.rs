//! `hearth bench generate`: prefill and decode speed of a real model.

use anyhow::{bail, Result};
use std::time::Instant;

use clap::Args;
use hearth_core::gpu::Profile;
use hearth_core::model::forward::KvCache;
use hearth_core::model::gpu_picks::{decode_batch_on_gpu, decode_on_gpu};
use hearth_core::model::sampling::{Sampler, SamplingParams};
use hearth_core::model::Model;
use hearth_core::GpuContext;
use hearth_core::train::memory::base_bytes;
use serde_json::json;

use crate::bench::{adapter_json, kernels_json};
use crate::load::{load_on_gpu, ModelArgs};
use crate::on_cores::map_on_cores;

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
    /// Also time each kernel of the prompt and the decode loop (as `bench train
    /// --kernel-times`: in place where the adapter can, else every launch run alone).
    #[arg(long)]
    pub kernel_times: bool,
    /// Then decode this many sequences together (as `hearth serve --max-batch` does, each
    /// after the prompt in a cache of its own): their tokens per second in all, and the
    /// launches of a step.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Sample the decoded tokens at this temperature, as generate and serve do (0: greedy,
    /// the default); with --top-p and --top-k. The GPU picks them where it can
    /// (`HEARTH_DECODE_AHEAD=0`: the host, its sampling part of a token's time).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// HF's repetition penalty over the prompt's and the decoded tokens (1: none).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Prefills timed (bench/peer.py times transformers' as many).
const PREFILL_RUNS: usize = 3;

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
    let sampling = SamplingParams { temperature: a.temperature, top_p: a.top_p, top_k: a.top_k, repetition_penalty: a.repetition_penalty, seed: 0 };
    let sampler = Sampler::new(sampling.clone());
    // decoding picks on the GPU, a token ahead, where it can (as generate does)
    let ahead = model.decodes_ahead(&ctx);
    block(model.forward(&ctx, &prompt))?;
    if ahead {
        block(decode_on_gpu(&ctx, &mut model, sampler.pick(0), 3, |_| Ok(true)))?;
    } else {
        block(model.forward(&ctx, &prompt[..1]))?;
    }
    // The prompt PREFILL_RUNS times from an empty cache, the fastest kept (with its profile):
    // one prefill takes tens of milliseconds, and on the H200 a lone one took 28 to 105 ms
    // from one machine to the next. (With --kernel-times the prompt's launches are timed too.)
    let mut fastest = None;
    let mut logits = Vec::new();
    for _ in 0..PREFILL_RUNS {
        model.reset();
        ctx.profile_begin_with(a.kernel_times);
        let start = Instant::now();
        logits = block(model.forward(&ctx, &prompt))?;
        let took = start.elapsed().as_secs_f64();
        let profile = block(ctx.profile_end())?;
        if fastest.as_ref().is_none_or(|&(best, _)| took < best) {
            fastest = Some((took, profile));
        }
    }
    let (prefill, prefill_profile) = fastest.expect("PREFILL_RUNS > 0");
    ctx.profile_begin_with(a.kernel_times);
    let start = Instant::now();
    // the host's time picking tokens from the logits read back (none where the GPU picks)
    let mut sampling_s = 0.0;
    if ahead {
        // new_tokens run, and the one after them picked, as the loop below
        block(decode_on_gpu(&ctx, &mut model, sampler.pick(0), a.new_tokens + 1, |_| Ok(true)))?;
    } else {
        let mut seen = prompt.clone();
        for draw in 0..a.new_tokens as u32 {
            let sampled = Instant::now();
            let next = sampler.sample(&mut logits, &seen, draw);
            sampling_s += sampled.elapsed().as_secs_f64();
            seen.push(next);
            logits = block(model.forward(&ctx, &[next]))?;
        }
    }
    let decode = start.elapsed().as_secs_f64();
    let profile = block(ctx.profile_end())?;
    let batch = if a.batch > 1 { Some(decode_together(&ctx, &mut model, &prompt, a.batch, a.new_tokens, &sampling)?) } else { None };
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
            "sampling": { "temperature": a.temperature, "top_p": a.top_p, "top_k": a.top_k, "repetition_penalty": a.repetition_penalty },
            "decode_ahead": ahead,
            "prefill_tokens_per_s": prompt.len() as f64 / prefill,
            "decode_tokens_per_s": a.new_tokens as f64 / decode,
            "prefill_dispatches": prefill_profile.dispatches,
            "prefill_host_ms": prefill_profile.host_ms,
            "prefill_gpu_ms": prefill_profile.gpu_ms,
            "prefill_matmul_gflop": prefill_profile.matmul_flops() / 1e9,
            "prefill_kernels": kernels_json(&prefill_profile, 1.0),
            // what a decoded token reads at least, for bench/report.py's bandwidth limit: every
            // weight once, and the KV cache's keys and values of each token of context
            "weight_bytes": base_bytes(&model.cfg, linear, head),
            "kv_bytes_per_context_token": model.cache.bytes() / model.cache.capacity.max(1) as u64,
            "dispatches_per_token": profile.dispatches as f64 / per_token,
            "host_ms_per_token": profile.host_ms / per_token,
            "host_sampling_ms_per_token": (!ahead).then(|| sampling_s * 1e3 / per_token),
            "bind_groups_created_per_token": profile.bind_groups_created as f64 / per_token,
            "buffers_created_per_token": profile.buffers_created as f64 / per_token,
            "gpu_ms_per_token": profile.gpu_ms.map(|g| g / per_token),
            "gpu_time_note": profile.gpu_time_note,
            "kernels": kernels_json(&profile, per_token),
            "kernel_timing": profile.kernel_times.map(|t| t.describe()),
            "batch": batch.as_ref().map(|b| json!({
                "sequences": a.batch,
                "picked_on_gpu": b.picked_on_gpu,
                "decode_tokens_per_s": b.tokens_per_s,
                "dispatches_per_step": b.profile.dispatches as f64 / per_token,
                "host_ms_per_step": b.profile.host_ms / per_token,
                "host_sampling_ms_per_step": b.sampling_ms_per_step,
                "gpu_ms_per_step": b.profile.gpu_ms.map(|g| g / per_token),
                "kernels": kernels_json(&b.profile, per_token),
            })),
        });
        println!("{out}");
        return Ok(());
    }
    println!("| phase   | tokens | seconds | tokens/s |");
    println!("|---------|-------:|--------:|---------:|");
    println!("| prefill | {:6} | {:7.3} | {:8.1} |", prompt.len(), prefill, prompt.len() as f64 / prefill);
    println!("| decode  | {:6} | {:7.3} | {:8.1} |", a.new_tokens, decode, a.new_tokens as f64 / decode);
    let mut how = if a.temperature > 0.0 { format!("sampled at temperature {}, top-p {}, top-k {}", a.temperature, a.top_p, a.top_k) } else { "greedy".into() };
    if a.repetition_penalty != 1.0 {
        how += &format!(" after a repetition penalty of {}", a.repetition_penalty);
    }
    if ahead {
        println!("decode {how}, each token picked on the GPU and run before the host reads it");
    } else {
        println!("decode {how}: {:.3} ms of host time a token picking it", sampling_s * 1e3 / per_token);
    }
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
        println!("the prompt:");
        crate::bench::print_kernel_times(&prefill_profile, 1.0);
        println!("a decoded token:");
        crate::bench::print_kernel_times(&profile, per_token);
    }
    if let Some(b) = batch {
        println!(
            "{} sequences decoded together: {:.1} tokens/s in all, {:.0} launches and {:.2} ms of host time per step{}",
            a.batch,
            b.tokens_per_s,
            b.profile.dispatches as f64 / per_token,
            b.profile.host_ms / per_token,
            b.profile.gpu_ms.map_or(String::new(), |g| format!(", {:.2} ms of GPU time", g / per_token))
        );
    }
    Ok(())
}

/// A batched decode's figures: tokens per second over all its sequences, and its profile.
struct Together {
    tokens_per_s: f64,
    profile: Profile,
    /// Whether each step's tokens were picked on the GPU rather than sampled from the logits
    /// read back.
    picked_on_gpu: bool,
    /// The host's time sampling a step's rows (on its cores at once), where it does.
    sampling_ms_per_step: Option<f64>,
}

/// `batch` sequences, each after `prompt` in a cache of its own (made together, as `hearth
/// serve` makes them), decoded together `new_tokens` steps (each sequence sampled as
/// `sampling` says, with a seed of its own), after one step to warm up.
fn decode_together(ctx: &GpuContext, model: &mut Model, prompt: &[u32], batch: usize, new_tokens: usize, sampling: &SamplingParams) -> Result<Together> {
    if batch > model.max_batch() {
        bail!("--batch {batch}: this model decodes at most {} sequences at once here (the prompt's chunk)", model.max_batch());
    }
    let mut caches = model.new_caches(ctx, batch)?;
    let samplers: Vec<Sampler> = (0..batch as u64).map(|seed| Sampler::new(SamplingParams { seed, ..sampling.clone() })).collect();
    let mut next = Vec::with_capacity(batch);
    for (cache, sampler) in caches.iter_mut().zip(&samplers) {
        model.swap_cache(cache);
        let logits = block(model.forward(ctx, prompt));
        model.swap_cache(cache);
        next.push(sampler.sample(&mut logits?, prompt, 0));
    }
    let vocab = model.cfg.vocab_size;
    // as hearth serve steps: the tokens picked on the GPU where it can
    let on_gpu = ctx.decode_ahead();
    let sampling_s = std::cell::Cell::new(0.0);
    // each sequence's tokens, where the host samples (a repetition penalty's)
    let seen = std::cell::RefCell::new(vec![prompt.to_vec(); batch]);
    // `steps` steps from draw `draw` (the first new token was draw 0): the last one's tokens
    let decode = |model: &mut Model, caches: &mut [KvCache], tokens: &[u32], draw: u32, steps: usize| -> Result<Vec<u32>> {
        let mut held: Vec<&mut KvCache> = caches.iter_mut().collect();
        let mut tokens = tokens.to_vec();
        if on_gpu {
            // each step run while the host reads the one before (where the model looks its
            // tokens up on the GPU; else a call a step)
            let mut done = 0;
            while done < steps {
                let first: Vec<_> = samplers.iter().map(|s| s.pick(draw + done as u32)).collect();
                let (input, left) = (tokens.clone(), steps - done);
                let accept = |r: usize, id| {
                    tokens[r] = id;
                    done += usize::from(r + 1 == batch);
                    Ok(true)
                };
                block(decode_batch_on_gpu(ctx, model, &mut held, &input, &first, accept, |k| k < left))?;
            }
            return Ok(tokens);
        }
        for draw in draw..draw + steps as u32 {
            let mut logits = block(model.decode_batch(ctx, &mut held, &tokens))?;
            // the rows sampled at once, as hearth serve samples them
            let sampled = Instant::now();
            let mut seen = seen.borrow_mut();
            seen.iter_mut().zip(&tokens).for_each(|(s, &t)| s.push(t));
            let rows = logits.chunks_mut(vocab).zip(&samplers).zip(seen.iter()).collect();
            tokens = map_on_cores(rows, |((row, sampler), seen)| sampler.sample(row, seen, draw));
            sampling_s.set(sampling_s.get() + sampled.elapsed().as_secs_f64());
        }
        Ok(tokens)
    };
    decode(model, &mut caches, &next, 1, 1)?;
    sampling_s.set(0.0);
    for cache in &mut caches {
        cache.rewind(prompt.len());
    }
    seen.borrow_mut().iter_mut().for_each(|s| s.truncate(prompt.len()));
    ctx.profile_begin();
    let start = Instant::now();
    decode(model, &mut caches, &next, 1, new_tokens)?;
    let secs = start.elapsed().as_secs_f64();
    let sampling_ms_per_step = (!on_gpu).then(|| sampling_s.get() * 1e3 / new_tokens.max(1) as f64);
    Ok(Together { tokens_per_s: (batch * new_tokens) as f64 / secs, profile: block(ctx.profile_end())?, picked_on_gpu: on_gpu, sampling_ms_per_step })
}

fn block<T>(f: impl std::future::Future<Output = hearth_core::Result<T>>) -> Result<T> {
    Ok(pollster::block_on(f)?)
}
