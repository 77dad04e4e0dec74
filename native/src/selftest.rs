//! `hearth selftest`: prints the adapter and the kernel paths it gets, and checks kernels
//! against their CPU references.

use anyhow::{bail, Result};
use hearth_core::model::sampling;
use hearth_core::ops::sample::{pick_tokens, seen_mask, SeenTokens, TokenPick};
use hearth_core::ops::attention::AttentionKernels;
use hearth_core::ops::{cpu, cross_entropy, rmsnorm};
use hearth_core::ops::matmul::{choose_tiling, matmul_gemv_normed, matmul_with, Accumulate, InputNorm, MatmulDims, MatmulKind, MatmulTiling};
use hearth_core::ops::matmul_quant::{matmul_quant, matmul_quant_gemv_normed, matmul_quant_with, GpuQuantWeight, QuantBlock};
use hearth_core::gpu::{KernelPaths, TileChoice};
use hearth_core::GpuContext;
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_core::rng::Rng;

mod training;

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn largest_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max)
}

/// Which kernels this adapter runs, as the launchers choose them.
fn print_paths(ctx: &GpuContext) {
    let small = MatmulDims::new(512, 576, 576);
    let large = MatmulDims::new(2048, 1536, 576);
    println!("kernel paths on this adapter: {:?}", ctx.kernel_paths());
    let row = MatmulDims::new(1, 576, 576);
    let thin = MatmulDims::new(2048, 16, 576);
    println!(
        "  f32 matmul           {:?} (512 × 576 outputs), {:?} (2048 × 1536), {:?} (2048 × 16: LoRA's rank side), {:?} (one row: decoding)",
        choose_tiling(ctx, MatmulKind::Forward, &small),
        choose_tiling(ctx, MatmulKind::Forward, &large),
        choose_tiling(ctx, MatmulKind::Forward, &thin),
        choose_tiling(ctx, MatmulKind::Forward, &row)
    );
    let quant_f16 = if ctx.has_f16() && QuantBlock::for_adapter(ctx) == QuantBlock::Tiled {
        if ctx.f16_matmuls() { "; forwards and input gradients in f16 tiles (HEARTH_F16_MATMUL=1)" } else { "; forwards and input gradients in f16 tiles with HEARTH_F16_MATMUL=1" }
    } else {
        ""
    };
    let gpu = ctx.kernel_paths() == KernelPaths::Gpu;
    let decode_block = if gpu { "Gemv kernel for 1 to 4 rows" } else { "Row kernel for one row" };
    println!("  quantized matmul     {:?} blocks; {decode_block} of x (decoding){quant_f16}", QuantBlock::for_adapter(ctx));
    println!(
        "  decoding             q, k and v of one token as one matmul (stacked weights){}",
        if gpu {
            "; gate, up and the activation in one launch; each of the two with the norm before it (o's and down's launches add to the stream); LoRA's h·Bᵀ inside the matrix-vector kernels"
        } else {
            "; gate and up apart (their one-launch kernel is the GPU kernels')"
        }
    );
    println!(
        "  picking tokens       {}",
        if ctx.decode_ahead() {
            "each token picked on the GPU (greedy, or drawn as the host's sampler draws) and run before the host reads it, where the model's embeddings are on the GPU (tied)"
        } else {
            "the logits read and the token picked on the host (HEARTH_DECODE_AHEAD=0)"
        }
    );
    let fused = choose_tiling(ctx, MatmulKind::Forward, &large).is_strided_gemm();
    println!(
        "  LoRA's h·Bᵀ and dx   {}",
        if fused { "inside the base matmul's launch (its low-rank term)" } else { "launched after the base matmul (the register kernels take no term)" }
    );
    let attention = AttentionKernels::for_training(ctx);
    let fallback = match attention {
        AttentionKernels::Matmul => format!(" ({:?} for sequences whose scores exceed a chunk, or heads not a multiple of 4)", AttentionKernels::without_matmuls(ctx)),
        AttentionKernels::Flash => {
            let apart = if ctx.flash_kv_apart() { ", dk and dv in launches of their own (HEARTH_FLASH_KV=apart)" } else { "" };
            format!(" (Matmul for heads above 128 or too little workgroup memory, else {:?}){apart}", AttentionKernels::without_matmuls(ctx))
        }
        _ => String::new(),
    };
    println!("  attention            {attention:?} kernels for training{fallback}; {:?} over a KV cache", AttentionKernels::for_cache(ctx));
    println!("  f16 weights          unpacked to f32 in the matmul (any adapter)");
    let f16 = match (ctx.has_f16(), ctx.offers_cooperative_matrix().1) {
        (false, _) => "none (the adapter has no shader-f16)",
        (true, true) => "forwards and input gradients, of f32 and of quantized weights, on cooperative matrices (a gradient's rows scaled first), below",
        (true, false) if ctx.kernel_paths() == KernelPaths::Gpu => "forwards and input gradients in the tiled kernels' f16 tiles, products summed in f32, a gradient's rows scaled first (checked below)",
        (true, false) => "in the tiled kernels' f16 tiles (checked below), which this adapter's kernels use only where the register kernels cannot take the sizes",
    };
    let on = if ctx.f16_matmuls() { "on (HEARTH_F16_MATMUL=1)" } else { "with HEARTH_F16_MATMUL=1; off by default" };
    println!("  f16 matmuls          {f16}{}", if ctx.has_f16() { format!("; {on}") } else { String::new() });
    println!(
        "  reductions           {} (rmsnorm, cross-entropy, gradient norm, matrix-vector products)",
        if ctx.subgroup_reductions() { "subgroup operations" } else { "workgroup memory (the adapter has no subgroups; wgpu passes none through WebGPU)" }
    );
    let coop = match (ctx.offers_cooperative_matrix().0, ctx.coop_shape()) {
        (false, _) => "not offered by this adapter".to_string(),
        (true, None) => "offered, but not as 16 × 16 × 16 or 8 × 8 × 8 f16 products into f32 (matmul_coop.wgsl's form)".to_string(),
        (true, Some(shape)) => format!(
            "f16 forwards and input gradients on matmul_coop.wgsl, quantized weights' on matmul/quant_coop.wgsl ({0} × {0} × {0}, {1}) {2}{3} (checked below)",
            shape.side,
            match shape.subgroups {
                (min, max) if min == max => format!("subgroups of {min}"),
                (min, max) => format!("subgroups of {min} to {max}, workgroups of {} invocations sized for {}", shape.invocations(), shape.sized_for),
            },
            if ctx.f16_matmuls() { "on (HEARTH_F16_MATMUL=1)" } else { "with HEARTH_F16_MATMUL=1; off by default" },
            if ctx.coop_prefetch() { ", matmul_coop.wgsl's stages loaded a stage ahead (HEARTH_COOP_PREFETCH=1)" } else { "" }
        ),
    };
    println!("  cooperative matrices {coop}");
    println!("  GPU timestamps       {}", if ctx.has_gpu_timer() { "yes (bench reports GPU time)" } else { "no (bench reports host and wall time only)" });
    let kept: Vec<&str> = ctx.shader_checks().named().into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect();
    let kept = if kept.is_empty() { "none of wgpu's".to_string() } else { format!("wgpu's {}", kept.join(", ")) };
    println!("  shader safeguards    {kept} (HEARTH_SHADER_CHECKS; a browser adds its own)");
}

/// rmsnorm's and cross-entropy's forwards, with the context's reductions: (name, largest
/// difference from the CPU) each. Rows of 300 and 5,000 cover several loop rounds of the
/// workgroups (64 and 256 invocations).
fn check_reductions(ctx: &GpuContext, rng: &mut Rng) -> Result<Vec<(&'static str, f64)>> {
    let (n, c) = (7, 300);
    let (x, w) = (rng.vec_uniform(n * c, -1.0, 1.0), rng.vec_uniform(c, -1.0, 1.0));
    let (xb, wb, out, rstd) = (ctx.upload_f32(&x)?, ctx.upload_f32(&w)?, ctx.alloc_f32(n * c)?, ctx.alloc_f32(n)?);
    rmsnorm::rmsnorm_forward(ctx, &out, &rstd, &xb, &wb, n, c, 1e-5)?;
    let (mut want, mut want_rstd) = (vec![0.0; n * c], vec![0.0; n]);
    cpu::rmsnorm_forward(&mut want, &mut want_rstd, &to64(&x), &to64(&w), n, c, 1e-5);
    let rmsnorm = largest_diff(&pollster::block_on(ctx.read_f32(&out))?, &want);

    let (r, v) = (5, 5000);
    let logits = rng.vec_uniform(r * v, -8.0, 8.0);
    let targets: Vec<u32> = (0..r).map(|_| rng.below(v) as u32).collect();
    let (lb, tb, losses) = (ctx.upload_f32(&logits)?, ctx.upload_u32(&targets)?, ctx.alloc_f32(r)?);
    cross_entropy::cross_entropy_forward(ctx, &losses, &lb, &tb, r, v)?;
    let mut want = vec![0.0; r];
    cpu::cross_entropy_forward(&mut want, &to64(&logits), &targets, v);
    let ce = largest_diff(&pollster::block_on(ctx.read_f32(&losses))?, &want);

    // the matrix-vector kernels' sums (decoding on GPUs), norming 3 rows as they read them,
    // over f32 and Q4_1 weights
    let (m, rows, k) = (3, 70, 576);
    let (x, nw, w) = (rng.vec_uniform(m * k, -3.0, 3.0), rng.vec_uniform(k, 0.5, 1.5), rng.vec_uniform(rows * k, -1.0, 1.0));
    let (mut xn, mut rms) = (vec![0.0; m * k], vec![0.0; m]);
    cpu::rmsnorm_forward(&mut xn, &mut rms, &to64(&x), &to64(&nw), m, k, 1e-5);
    let (xb, nwb, wb, yb) = (ctx.upload_f32(&x)?, ctx.upload_f32(&nw)?, ctx.upload_f32(&w)?, ctx.alloc_f32(m * rows)?);
    let norm = InputNorm { weight: &nwb, eps: 1e-5 };
    let mut want = vec![0.0; m * rows];
    matmul_gemv_normed(ctx, &yb, &xb, &wb, MatmulDims::new(m, rows, k), norm, None)?;
    cpu::matmul_forward(&mut want, &xn, &to64(&w), m, rows, k);
    let gemv = largest_diff(&pollster::block_on(ctx.read_f32(&yb))?, &want);
    let q = QuantTensor::quantize(QuantFormat::Q4_1, &w, rows, k)?;
    matmul_quant_gemv_normed(ctx, &yb, None, &xb, &GpuQuantWeight::upload(ctx, &q)?, m, norm, None)?;
    cpu::matmul_forward(&mut want, &xn, &to64(&q.dequantize()), m, rows, k);
    let quant_gemv = largest_diff(&pollster::block_on(ctx.read_f32(&yb))?, &want);
    Ok(vec![("rmsnorm_forward", rmsnorm), ("cross_entropy_forward", ce), ("matmul_gemv_normed", gemv), ("matmul_q4_1_gemv_normed", quant_gemv)])
}

/// An f16 forward (`tiling`: the f16 tiles or cooperative matrices) against the CPU's on
/// the same inputs rounded to f16, so that what remains is f32 accumulation: (shape, largest
/// difference) for a shape of whole tiles, one of ragged edges, and one whose long reduction
/// is split.
fn check_f16(ctx: &GpuContext, tiling: MatmulTiling, rng: &mut Rng) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for (m, n, k) in [(128, 64, 256), (70, 97, 130), (8, 40, 4100)] {
        let round = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect() };
        let (x, w) = (round(rng.vec_uniform(m * k, -1.0, 1.0)), round(rng.vec_uniform(n * k, -1.0, 1.0)));
        let (xb, wb, yb) = (ctx.upload_f32(&x)?, ctx.upload_f32(&w)?, ctx.alloc_f32(m * n)?);
        matmul_with(ctx, MatmulKind::Forward, tiling, &yb, &xb, &wb, MatmulDims::new(m, n, k), Accumulate::OVERWRITE)?;
        let mut want = vec![0.0; m * n];
        cpu::matmul_forward(&mut want, &to64(&x), &to64(&w), m, n, k);
        out.push((format!("{m}×{n}×{k}"), largest_diff(&pollster::block_on(ctx.read_f32(&yb))?, &want)));
    }
    Ok(out)
}

/// An input gradient in f16 (`format`: a quantized weight's, on cooperative matrices where
/// `tiling` is theirs, else in f16 tiles; else f32's in `tiling`) of
/// an output gradient whose rows range from 1e-9 to 1e5, against the CPU's on the unrounded
/// inputs: the largest difference relative to Σ|products| of its value. The rows are scaled by
/// powers of two before they are rounded to f16 (pieces/row_scales.wgsl), so each keeps f16's
/// 11 bits: 2·2^-11 per product, and the f32 sums.
fn check_f16_input_gradient(ctx: &GpuContext, tiling: MatmulTiling, format: Option<QuantFormat>, rng: &mut Rng) -> Result<f64> {
    const MAGNITUDES: [f32; 7] = [1e-9, 1e-7, 1e-5, 1e-3, 1.0, 1e2, 1e5];
    let (m, n, k) = (70, 1024, 128);
    let mut dy = rng.vec_uniform(m * n, -1.0, 1.0);
    for (i, row) in dy.chunks_mut(n).enumerate() {
        row.iter_mut().for_each(|x| *x *= MAGNITUDES[i % MAGNITUDES.len()]);
    }
    let w = rng.vec_uniform(n * k, -1.0, 1.0);
    let (dyb, out) = (ctx.upload_f32(&dy)?, ctx.alloc_f32(m * k)?);
    let w = match format {
        Some(format) => {
            let t = QuantTensor::quantize(format, &w, n, k)?;
            let block = if tiling == MatmulTiling::Coop { QuantBlock::Coop } else { QuantBlock::TiledF16 };
            matmul_quant_with(ctx, block, MatmulKind::BackwardInput, &out, &dyb, &GpuQuantWeight::upload(ctx, &t)?, m, Accumulate::OVERWRITE, None)?;
            t.dequantize()
        }
        None => {
            matmul_with(ctx, MatmulKind::BackwardInput, tiling, &out, &dyb, &ctx.upload_f32(&w)?, MatmulDims::new(m, n, k), Accumulate::OVERWRITE)?;
            w
        }
    };
    let (mut want, mut sizes) = (vec![0.0; m * k], vec![0.0; m * k]);
    let abs = |v: &[f32]| -> Vec<f64> { v.iter().map(|x| x.abs() as f64).collect() };
    cpu::matmul_backward_input(&mut want, &to64(&dy), &to64(&w), m, n, k);
    cpu::matmul_backward_input(&mut sizes, &abs(&dy), &abs(&w), m, n, k);
    let got = pollster::block_on(ctx.read_f32(&out))?;
    Ok((0..m * k).map(|i| (got[i] as f64 - want[i]).abs() / sizes[i]).fold(0.0, f64::max))
}

/// A quantized forward in f16 (`block`: f16 tiles or cooperative matrices) against the CPU's
/// over x and the dequantized weight rounded to f16 (a weight whose f32 decoding lands an ulp
/// away may round to the other neighbour: 5e-4 at most for weights below 1), over a reduction
/// long enough to split.
fn check_quant_f16(ctx: &GpuContext, block: QuantBlock, format: QuantFormat, rng: &mut Rng) -> Result<f64> {
    let (m, n, k) = (40, 72, 1024);
    let round = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect() };
    let x = round(rng.vec_uniform(m * k, -1.0, 1.0));
    let t = QuantTensor::quantize(format, &rng.vec_uniform(n * k, -1.0, 1.0), n, k)?;
    let (xb, yb, gw) = (ctx.upload_f32(&x)?, ctx.alloc_f32(m * n)?, GpuQuantWeight::upload(ctx, &t)?);
    matmul_quant_with(ctx, block, MatmulKind::Forward, &yb, &xb, &gw, m, Accumulate::OVERWRITE, None)?;
    let mut want = vec![0.0; m * n];
    cpu::matmul_forward(&mut want, &to64(&x), &to64(&round(t.dequantize())), m, n, k);
    Ok(largest_diff(&pollster::block_on(ctx.read_f32(&yb))?, &want))
}

pub fn run() -> Result<()> {
    let ctx = crate::open_gpu()?;
    print_paths(&ctx);
    if ctx.is_noop() {
        println!("wgpu's noop backend runs nothing, so there are no kernels to check (it is for timing the host's side of `hearth bench`)");
        return Ok(());
    }
    let mut rng = Rng::new(0);
    let (m, n, k) = (70, 96, 128);
    let x = rng.vec_uniform(m * k, -1.0, 1.0);
    let w = rng.vec_uniform(n * k, -1.0, 1.0);
    let (xb, wb, yb) = (ctx.upload_f32(&x)?, ctx.upload_f32(&w)?, ctx.alloc_f32(m * n)?);
    let mut want = vec![0.0; m * n];
    cpu::matmul_forward(&mut want, &to64(&x), &to64(&w), m, n, k);
    let mut failed = 0;
    // Tolerance: f32 sums of 128 products of magnitude ≤ 1; an f16 input gradient's error
    // relative to its products (check_f16_input_gradient): 1.5e-3; the greedy pick's index
    // exactly, a draw's perturbed logit to rounding (sampling::draw_score).
    let mut report = |name: String, diff: f64, limit: f64| {
        let ok = diff < limit;
        failed += usize::from(!ok);
        println!("{:<44} largest difference {diff:.2e}  {}", name, if ok { "ok" } else { "FAILED" });
    };
    for tiling in MatmulTiling::ALL {
        matmul_with(&ctx, MatmulKind::Forward, tiling, &yb, &xb, &wb, MatmulDims::new(m, n, k), Accumulate::OVERWRITE)?;
        let got = pollster::block_on(ctx.read_f32(&yb))?;
        report(format!("matmul_forward ({tiling:?})"), largest_diff(&got, &want), 1e-3);
    }
    for format in QuantFormat::ALL {
        let t = QuantTensor::quantize(format, &w, n, k)?;
        let mut want = vec![0.0; m * n];
        cpu::matmul_forward(&mut want, &to64(&x), &to64(&t.dequantize()), m, n, k);
        let gw = GpuQuantWeight::upload(&ctx, &t)?;
        matmul_quant(&ctx, MatmulKind::Forward, &yb, &xb, &gw, m, Accumulate::OVERWRITE)?;
        let got = pollster::block_on(ctx.read_f32(&yb))?;
        report(format!("matmul_{format:?}_forward").to_lowercase(), largest_diff(&got, &want), 1e-3);
    }
    // decoding's picks from a vocabulary's logits: greedy among seven levels (the first of
    // ties), and a draw from the top 50's nucleus of 0.9 at temperature 0.8 after a repetition
    // penalty of 1.3 on 200 tokens seen
    let v = 49_152;
    let levels: Vec<f32> = (0..v).map(|_| rng.below(7) as f32).collect();
    let spread = rng.vec_uniform(v, -8.0, 8.0);
    let picked = ctx.alloc_f32(4)?;
    let seen_ids: Vec<u32> = (0..200).map(|i| (i * 7919) % v as u32).collect();
    let drawn = TokenPick { temperature: 0.8, top_k: 50, top_p: 0.9, repetition_penalty: 1.3, seed_hash: sampling::seed_hash(7), draw: 3 };
    for (what, logits, pick) in [("greedy", &levels, TokenPick::GREEDY), ("a draw", &spread, drawn)] {
        let seen = ctx.upload_u32(&seen_mask(&seen_ids, v))?;
        pick_tokens(&ctx, &picked, &ctx.upload_f32(logits)?, 0, &[pick], &SeenTokens { masks: &seen, at: &[0] }, v)?;
        let got = pollster::block_on(ctx.read_f32(&picked))?[0] as u32;
        let mut logits = logits.clone();
        sampling::penalize(&mut logits, &seen_ids, pick.repetition_penalty);
        let logits = &logits;
        let want = sampling::pick_token(logits, &pick);
        let (diff, limit) = match pick.temperature > 0.0 {
            true => ((sampling::draw_score(logits, &pick, got) - sampling::draw_score(logits, &pick, want)).abs() as f64, 1e-4),
            false => (got.abs_diff(want) as f64, 0.5),
        };
        report(format!("pick of {v} logits ({what})"), diff, limit);
    }
    // what a training step runs, as this context runs it (before the reductions' loop below
    // leaves the context on its workgroup-memory variant)
    for (name, diff) in training::check(&ctx, &mut rng)? {
        report(name, diff, training::LIMIT);
    }
    let mut ctx = ctx;
    if ctx.kernel_paths() == KernelPaths::Gpu {
        let tuned = ctx.tile_choice();
        ctx.set_tile_choice(TileChoice { side: Some(128), ..tuned });
        let products = training::products(&ctx, &mut rng)?;
        for (name, diff) in products.into_iter().chain(training::quantized(&ctx, &mut rng)?) {
            report(name.replacen("training:", "training in tiles of 128:", 1), diff, training::LIMIT);
        }
        ctx.set_tile_choice(tuned);
    }
    // The reductions' variants: the subgroup one (where the adapter has subgroups), then
    // the workgroup-memory one.
    let with_subgroups = ctx.subgroup_reductions();
    for subgroups in [true, false] {
        if subgroups && !with_subgroups {
            continue;
        }
        ctx = ctx.with_subgroup_reductions(subgroups);
        let variant = if subgroups { "subgroups" } else { "workgroup memory" };
        for (name, diff) in check_reductions(&ctx, &mut rng)? {
            report(format!("{name} ({variant})"), diff, 1e-3);
        }
    }
    if ctx.has_f16() {
        for tiling in [MatmulTiling::TiledF16, MatmulTiling::TiledWideF16] {
            for (shape, diff) in check_f16(&ctx, tiling, &mut rng)? {
                report(format!("matmul_forward ({tiling:?}) {shape}"), diff, 1e-3);
            }
            let name = format!("matmul_backward_input ({tiling:?}), rows 1e-9..1e5, error ÷ Σ|products|");
            report(name, check_f16_input_gradient(&ctx, tiling, None, &mut rng)?, 1.5e-3);
        }
    }
    if ctx.has_f16() {
        for format in QuantFormat::ALL {
            let name = format!("{format:?}").to_lowercase();
            report(format!("matmul_{name}_forward (TiledF16)"), check_quant_f16(&ctx, QuantBlock::TiledF16, format, &mut rng)?, 1e-3);
            let diff = check_f16_input_gradient(&ctx, MatmulTiling::TiledF16, Some(format), &mut rng)?;
            report(format!("matmul_{name}_backward_input (TiledF16), rows 1e-9..1e5, error ÷ Σ|products|"), diff, 1.5e-3);
        }
    }
    if let Some(mut coop) = crate::open_coop_gpu(&ctx)? {
        // in each of the kernels' tiles (64 × 64, and 128 × 128 for large outputs)
        for side in [64, 128] {
            coop.set_tile_choice(TileChoice { side: Some(side), ..Default::default() });
            for (shape, diff) in check_f16(&coop, MatmulTiling::Coop, &mut rng)? {
                report(format!("matmul_coop forward {shape}, tiles of {side}"), diff, 1e-3);
            }
            let diff = check_f16_input_gradient(&coop, MatmulTiling::Coop, None, &mut rng)?;
            report(format!("matmul_coop backward_input, tiles of {side}, rows 1e-9..1e5, error ÷ Σ|products|"), diff, 1.5e-3);
            for format in QuantFormat::ALL {
                let name = format!("{format:?}").to_lowercase();
                report(format!("matmul_{name}_forward (Coop), tiles of {side}"), check_quant_f16(&coop, QuantBlock::Coop, format, &mut rng)?, 1e-3);
                let diff = check_f16_input_gradient(&coop, MatmulTiling::Coop, Some(format), &mut rng)?;
                report(format!("matmul_{name}_backward_input (Coop), tiles of {side}, rows 1e-9..1e5, error ÷ Σ|products|"), diff, 1.5e-3);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} kernel checks failed on this adapter");
    }
    println!("all kernel checks passed");
    Ok(())
}
