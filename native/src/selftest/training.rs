//! selftest's checks of what a training step runs, as this context runs it: the f32 products
//! of each kind in the tiling, tiles and split the context picks for them (LoRA's thin
//! outputs and the rank's rows, reductions long enough to split into parts), the base
//! products with LoRA's low-rank term, and attention's forward and backward in the kernels
//! it trains with. The GPU kernels' tests check these on lavapipe and SwiftShader; here they
//! run on the adapter in hand, where a GPU's compiler or memory model could differ.

use anyhow::Result;
use hearth_core::ops::attention::{attention_backward, attention_forward, segment_runs, AttentionDims, AttentionKernels, Segments};
use hearth_core::ops::cpu::{self, AttnSizes};
use hearth_core::ops::matmul::{choose_tiling, matmul, matmul_low_rank, Accumulate, LowRankTerm, MatmulDims, MatmulKind, TermLayout};
use hearth_core::ops::matmul_quant::{choose_block, matmul_quant, GpuQuantWeight};
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_core::rng::Rng;
use hearth_core::GpuContext;

use super::{largest_diff, to64};

/// Each check's largest difference from the CPU's f64 sums, relative to the largest value
/// wanted (or to 1 where all are smaller): f32 sums of up to 5,000 products differ by some
/// 1e-6 of it; a wrong tile, part or index by its own size.
pub const LIMIT: f64 = 1e-4;

fn relative_diff(got: &[f32], want: &[f64]) -> f64 {
    largest_diff(got, want) / want.iter().fold(1.0f64, |m, w| m.max(w.abs()))
}

/// The CPU's f64 `kind` product of a and b (ops::matmul's layouts).
fn cpu_product(kind: MatmulKind, a: &[f64], b: &[f64], d: MatmulDims) -> Vec<f64> {
    let (m, n, k) = (d.m, d.n, d.k);
    let mut out = vec![0.0; kind.operand_lens(&d).2];
    cpu::matmul(kind, &mut out, a, b, m, n, k);
    out
}

fn read(ctx: &GpuContext, buf: &hearth_core::GpuBuffer) -> Result<Vec<f32>> {
    Ok(pollster::block_on(ctx.read_f32(buf))?)
}

/// Every check's name and relative difference.
pub fn check(ctx: &GpuContext, rng: &mut Rng) -> Result<Vec<(String, f64)>> {
    let mut out = products(ctx, rng)?;
    out.extend(low_rank_terms(ctx, rng)?);
    out.extend(quantized(ctx, rng)?);
    out.extend(attention(ctx, rng)?);
    Ok(out)
}

/// The three kinds of product at (M, N, K): a plain one; LoRA's x·Aᵀ (16 outputs a row: thin
/// tiles) and its dA (the rank's 16 rows over 300 tokens); a reduction of 4,100 steps (split
/// into parts where its tiles are few); a weight gradient over 5,000 tokens. (selftest runs
/// them again in tiles of 128, where the GPU kernels run: the base's products at a step's
/// sizes take them.)
pub fn products(ctx: &GpuContext, rng: &mut Rng) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for (m, n, k) in [(70, 96, 128), (300, 16, 600), (70, 96, 4100), (5000, 16, 64)] {
        let d = MatmulDims::new(m, n, k);
        for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
            let (a_len, b_len, out_len) = kind.operand_lens(&d);
            let (a, b) = (rng.vec_uniform(a_len, -1.0, 1.0), rng.vec_uniform(b_len, -1.0, 1.0));
            let want = cpu_product(kind, &to64(&a), &to64(&b), d);
            let y = ctx.alloc_f32(out_len)?;
            matmul(ctx, kind, &y, &ctx.upload_f32(&a)?, &ctx.upload_f32(&b)?, d, Accumulate::OVERWRITE)?;
            out.push((format!("training: {kind:?} {m}×{n}×{k} ({:?}), relative", choose_tiling(ctx, kind, &d)), relative_diff(&read(ctx, &y)?, &want)));
        }
    }
    Ok(out)
}

/// The base forward with LoRA's term (x·Wᵀ + scale·h·Bᵀ) and its input gradient with LoRA's
/// part (dy·W + dh·A), rank 16, as lora_up_term and lora_input_term lay them out.
fn low_rank_terms(ctx: &GpuContext, rng: &mut Rng) -> Result<Vec<(String, f64)>> {
    let (m, n, k, r) = (300, 96, 600, 16);
    let d = MatmulDims::new(m, n, k);
    let mut u = |len| rng.vec_uniform(len, -1.0, 1.0);
    let (x, w, h, lora_b) = (u(m * k), u(n * k), u(m * r), u(n * r));
    let (dy, dh, lora_a) = (u(m * n), u(m * r), u(r * k));
    let term = |h, v, scale| LowRankTerm { h, v, rank: r, scale, dropout: (0.0, 0), layout: TermLayout::Rows };
    let mut out = Vec::new();

    let mut want = cpu_product(MatmulKind::Forward, &to64(&x), &to64(&w), d);
    let part = cpu_product(MatmulKind::Forward, &to64(&h), &to64(&lora_b), MatmulDims::new(m, n, r));
    want.iter_mut().zip(&part).for_each(|(w, p)| *w += 2.0 * p);
    let (hb, bb, y) = (ctx.upload_f32(&h)?, ctx.upload_f32(&lora_b)?, ctx.alloc_f32(m * n)?);
    matmul_low_rank(ctx, MatmulKind::Forward, &y, &ctx.upload_f32(&x)?, &ctx.upload_f32(&w)?, d, Accumulate::OVERWRITE, term(&hb, &bb, 2.0))?;
    let tiling = choose_tiling(ctx, MatmulKind::Forward, &d);
    out.push((format!("training: Forward {m}×{n}×{k} + h·Bᵀ, rank {r} ({tiling:?}), relative"), relative_diff(&read(ctx, &y)?, &want)));

    let mut want = cpu_product(MatmulKind::BackwardInput, &to64(&dy), &to64(&w), d);
    let part = cpu_product(MatmulKind::BackwardInput, &to64(&dh), &to64(&lora_a), MatmulDims::new(m, r, k));
    want.iter_mut().zip(&part).for_each(|(w, p)| *w += p);
    let (dhb, ab, dx) = (ctx.upload_f32(&dh)?, ctx.upload_f32(&lora_a)?, ctx.alloc_f32(m * k)?);
    matmul_low_rank(ctx, MatmulKind::BackwardInput, &dx, &ctx.upload_f32(&dy)?, &ctx.upload_f32(&w)?, d, Accumulate::OVERWRITE, term(&dhb, &ab, 1.0))?;
    let tiling = choose_tiling(ctx, MatmulKind::BackwardInput, &d);
    out.push((format!("training: BackwardInput {m}×{n}×{k} + dh·A, rank {r} ({tiling:?}), relative"), relative_diff(&read(ctx, &dx)?, &want)));
    Ok(out)
}

/// QLoRA's base products: the forward and the input gradient of a weight in each quantized
/// format, against the CPU's over the weight it decodes to.
pub fn quantized(ctx: &GpuContext, rng: &mut Rng) -> Result<Vec<(String, f64)>> {
    let (m, n, k) = (300, 96, 512);
    let d = MatmulDims::new(m, n, k);
    let mut out = Vec::new();
    for format in QuantFormat::ALL {
        let t = QuantTensor::quantize(format, &rng.vec_uniform(n * k, -1.0, 1.0), n, k)?;
        let (w, gw) = (to64(&t.dequantize()), GpuQuantWeight::upload(ctx, &t)?);
        for kind in [MatmulKind::Forward, MatmulKind::BackwardInput] {
            let (a_len, _, out_len) = kind.operand_lens(&d);
            let a = rng.vec_uniform(a_len, -1.0, 1.0);
            let want = cpu_product(kind, &to64(&a), &w, d);
            let y = ctx.alloc_f32(out_len)?;
            matmul_quant(ctx, kind, &y, &ctx.upload_f32(&a)?, &gw, m, Accumulate::OVERWRITE)?;
            let block = choose_block(ctx, kind, &gw, m);
            out.push((format!("training: {format:?} {kind:?} {m}×{n}×{k} ({block:?}), relative"), relative_diff(&read(ctx, &y)?, &want)));
        }
    }
    Ok(out)
}

/// Causal attention over SmolLM2's heads (9 over 3 KV heads of 64), two rows of 130 tokens
/// (three blocks of 64), the second packed with two sequences: its output and dq, dk, dv.
fn attention(ctx: &GpuContext, rng: &mut Rng) -> Result<Vec<(String, f64)>> {
    let (b, t, nh, nkv, hs) = (2, 130, 9, 3, 64);
    let d = AttentionDims::causal(b, t, nh, nkv, hs);
    let s = AttnSizes::causal(b, t, nh, nkv, hs);
    let seg: Vec<u32> = (0..b * t).map(|i| u32::from(i >= t + 50)).collect();
    let mut u = |len| rng.vec_uniform(len, -1.0, 1.0);
    let (q_len, kv_len) = (b * t * nh * hs, b * t * nkv * hs);
    let (q, k, v, g) = (u(q_len), u(kv_len), u(kv_len), u(q_len));
    let mut want = vec![0.0; q.len()];
    cpu::attention_forward(&mut want, &to64(&q), &to64(&k), &to64(&v), &seg, s);
    let (mut wq, mut wk, mut wv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    cpu::attention_backward(&mut wq, &mut wk, &mut wv, &to64(&g), &to64(&q), &to64(&k), &to64(&v), &seg, s);

    let (runs, lens) = segment_runs(&seg, t)?;
    let (ids, runs) = (ctx.upload_u32(&seg)?, ctx.upload_u32(&runs)?);
    let seg = Segments { ids: &ids, runs: &runs, lens: &lens, with_pos: None };
    let (qb, kb, vb, gb) = (ctx.upload_f32(&q)?, ctx.upload_f32(&k)?, ctx.upload_f32(&v)?, ctx.upload_f32(&g)?);
    let (out, stats) = (ctx.alloc_f32(q.len())?, ctx.alloc_f32(d.stats_len())?);
    attention_forward(ctx, &out, &stats, &qb, &kb, &vb, seg, d)?;
    let (dq, dk, dv) = (ctx.alloc_f32(q.len())?, ctx.alloc_f32(k.len())?, ctx.alloc_f32(v.len())?);
    attention_backward(ctx, &dq, &dk, &dv, &gb, &qb, &kb, &vb, &out, &stats, seg, d, None)?;
    let kernels = AttentionKernels::for_training(ctx).for_dims(ctx, &d, &lens);
    let name = |what| format!("training: attention {what}, {b} × {t} tokens, {nh} heads over {nkv} of {hs} ({kernels:?}), relative");
    Ok(vec![
        (name("out"), relative_diff(&read(ctx, &out)?, &want)),
        (name("dq"), relative_diff(&read(ctx, &dq)?, &wq)),
        (name("dk"), relative_diff(&read(ctx, &dk)?, &wk)),
        (name("dv"), relative_diff(&read(ctx, &dv)?, &wv)),
    ])
}
