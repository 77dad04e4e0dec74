//! Training attention as batched matmuls, for software adapters: each packed sequence (a run
//! of one segment id, longest first) is padded to the longest of its chunk, and the scores of
//! a chunk of (run, KV head) pairs are materialized, so that the register matmul kernels run
//! the products where attention.wgsl's per-row kernels read every key once per query row
//! (docs/PERF.md). The G query heads that share a KV head are stacked as G·TP rows, so each
//! pair is one matrix product against its keys and values.

use super::attention::{AttentionDims, Segments};
use super::grid_1d;
use super::matmul::{matmul, Accumulate, MatmulDims, MatmulKind, BATCHED_MAX_REDUCTION};
use crate::gpu::{Kernel, KernelPaths, Shader};
use crate::{GpuBuffer, GpuContext, Result};

/// Scores one chunk may hold, in bytes (the backward holds two such buffers at once).
const CHUNK_SCORE_BYTES: usize = 32 << 20;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    t: u32,
    tp: u32,
    nh: u32,
    nkv: u32,
    hs: u32,
    g: u32,
    heads: u32,
    z0: u32,
    pairs: u32,
    scale: f32,
    window: u32,
}

/// (run, KV head) pairs of runs up to `longest` tokens per chunk, or None where the matmuls
/// cannot take the sizes: one pair's scores alone exceed a chunk (sequences of thousands of
/// tokens), the head size is not a multiple of 4 (the gathers move vec4s), or, on GPUs, a
/// pair's G·TP query rows exceed the longest reduction a batched product on cooperative
/// matrices takes whole (the tiled kernels split a batch's reductions; its weight gradients
/// reduce over those rows).
pub(crate) fn pairs_per_chunk(ctx: &GpuContext, d: &AttentionDims, longest: usize) -> Option<usize> {
    let tp = longest.next_multiple_of(4);
    let group = d.nh / d.nkv;
    let batched_ok = ctx.kernel_paths() != KernelPaths::Gpu || group * tp <= BATCHED_MAX_REDUCTION;
    if !d.hs.is_multiple_of(4) || !batched_ok {
        return None;
    }
    let n = CHUNK_SCORE_BYTES / (group * tp * tp * 4).max(1);
    (n > 0).then_some(n)
}

/// Pairs z0..z0 + pairs, each run padded to `tp` rows, its first run's length (the longest)
/// rounded up to a multiple of 4 (the matmuls' vec4 rule).
struct Chunk<'a> {
    ctx: &'a GpuContext,
    d: AttentionDims,
    runs: &'a GpuBuffer,
    z0: usize,
    pairs: usize,
    tp: usize,
}

impl Chunk<'_> {
    fn group(&self) -> usize {
        self.d.nh / self.d.nkv
    }

    fn params(&self, g: usize, heads: usize) -> Params {
        let d = &self.d;
        Params {
            t: d.t as u32,
            tp: self.tp as u32,
            nh: d.nh as u32,
            nkv: d.nkv as u32,
            hs: d.hs as u32,
            g: g as u32,
            heads: heads as u32,
            z0: self.z0 as u32,
            pairs: self.pairs as u32,
            scale: d.scale,
            window: d.window as u32,
        }
    }

    /// The chunk's rows of x (B, T, heads, HS) as (pairs, G, TP, HS); G = heads / NKV.
    fn gather(&self, x: &GpuBuffer, heads: usize) -> Result<GpuBuffer> {
        let g = heads / self.d.nkv;
        let len = self.pairs * g * self.tp * self.d.hs;
        let out = self.ctx.alloc_scratch_f32(len)?;
        let kernel = Kernel::new(Shader::AttentionMatmul, "attention_gather", 0);
        self.ctx.dispatch(&kernel, &[self.runs, x], &[&out], &self.params(g, heads), grid_1d(len as u64 / 4, 64))?;
        Ok(out)
    }

    /// The inverse of [`Chunk::gather`]: writes the chunk's rows of x.
    fn scatter(&self, xc: &GpuBuffer, x: &GpuBuffer, heads: usize) -> Result<()> {
        let g = heads / self.d.nkv;
        let len = self.pairs * g * self.tp * self.d.hs;
        let kernel = Kernel::new(Shader::AttentionMatmul, "attention_scatter", 0);
        self.ctx.dispatch(&kernel, &[self.runs, xc], &[x], &self.params(g, heads), grid_1d(len as u64 / 4, 64))
    }

    /// Sizes of the products: per pair, G·TP query rows against TP keys over HS.
    fn dims(&self) -> MatmulDims {
        MatmulDims { batch: self.pairs, b_batched: true, ..MatmulDims::new(self.group() * self.tp, self.tp, self.d.hs) }
    }

    fn alloc_scores(&self) -> Result<GpuBuffer> {
        self.ctx.alloc_scratch_f32(self.pairs * self.group() * self.tp * self.tp)
    }

    fn alloc_rows(&self, g: usize) -> Result<GpuBuffer> {
        self.ctx.alloc_scratch_f32(self.pairs * g * self.tp * self.d.hs)
    }

    /// scale · q·kᵀ, (pairs, G·TP, TP).
    fn scores(&self, qc: &GpuBuffer, kc: &GpuBuffer) -> Result<GpuBuffer> {
        let s = self.alloc_scores()?;
        matmul(self.ctx, MatmulKind::Forward, &s, qc, kc, self.dims(), Accumulate { alpha: self.d.scale, beta: 0.0 })?;
        Ok(s)
    }
}

/// The chunks of the runs' pairs, in order; errors if a single pair's scores do not fit one.
fn chunks<'a>(ctx: &'a GpuContext, d: AttentionDims, seg: &Segments<'a>) -> Result<Vec<Chunk<'a>>> {
    let total = seg.lens.len() * d.nkv;
    let mut chunks = Vec::new();
    let mut z0 = 0;
    while z0 < total {
        let longest = seg.lens[z0 / d.nkv] as usize;
        let per = pairs_per_chunk(ctx, &d, longest).ok_or_else(|| {
            crate::Error::Shape(format!(
                "attention as matmuls needs a head size that is a multiple of 4 (got {}) and sequences whose scores fit {CHUNK_SCORE_BYTES} bytes per KV head (this one has {longest} tokens; on GPUs, {BATCHED_MAX_REDUCTION} query rows per KV head)",
                d.hs
            ))
        })?;
        let pairs = per.min(total - z0);
        chunks.push(Chunk { ctx, d, runs: seg.runs, z0, pairs, tp: longest.next_multiple_of(4) });
        z0 += pairs;
    }
    Ok(chunks)
}

/// out (B,T,NH,HS) and stats.lse, as attention.wgsl's forward computes them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(ctx: &GpuContext, out: &GpuBuffer, stats: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, seg: Segments, d: AttentionDims) -> Result<()> {
    for c in chunks(ctx, d, &seg)? {
        let (qc, kc, vc) = (c.gather(q, d.nh)?, c.gather(k, d.nkv)?, c.gather(v, d.nkv)?);
        let s = c.scores(&qc, &kc)?;
        let rows = c.pairs * c.group() * c.tp;
        let kernel = Kernel::new(Shader::AttentionMatmul, "attention_softmax", 3);
        ctx.dispatch(&kernel, &[seg.runs], &[&s, stats], &c.params(c.group(), d.nh), grid_1d(rows as u64, 64))?;
        let oc = c.alloc_rows(c.group())?;
        matmul(ctx, MatmulKind::BackwardInput, &oc, &s, &vc, c.dims(), Accumulate::OVERWRITE)?;
        c.scatter(&oc, out, d.nh)?;
    }
    Ok(())
}

/// dq, dk, dv; `stats` holds (lse, Σ dout·out) per query row (attention_backward_prep).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(ctx: &GpuContext, dq: &GpuBuffer, dk: &GpuBuffer, dv: &GpuBuffer, dout: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, stats: &GpuBuffer, seg: Segments, d: AttentionDims) -> Result<()> {
    for c in chunks(ctx, d, &seg)? {
        let (qc, kc, vc, gc) = (c.gather(q, d.nh)?, c.gather(k, d.nkv)?, c.gather(v, d.nkv)?, c.gather(dout, d.nh)?);
        let s = c.scores(&qc, &kc)?;
        let dp = c.alloc_scores()?;
        matmul(ctx, MatmulKind::Forward, &dp, &gc, &vc, c.dims(), Accumulate::OVERWRITE)?;
        // s becomes P, dp becomes dS
        let vec4s = c.pairs * c.group() * c.tp * c.tp / 4;
        let kernel = Kernel::new(Shader::AttentionMatmul, "attention_softmax_backward", 6);
        ctx.dispatch(&kernel, &[seg.runs, stats], &[&s, &dp], &c.params(c.group(), d.nh), grid_1d(vec4s as u64, 64))?;
        let (dqc, dkc, dvc) = (c.alloc_rows(c.group())?, c.alloc_rows(1)?, c.alloc_rows(1)?);
        matmul(ctx, MatmulKind::BackwardWeight, &dvc, &s, &gc, c.dims(), Accumulate::OVERWRITE)?;
        matmul(ctx, MatmulKind::BackwardInput, &dqc, &dp, &kc, c.dims(), Accumulate::OVERWRITE)?;
        matmul(ctx, MatmulKind::BackwardWeight, &dkc, &dp, &qc, c.dims(), Accumulate::OVERWRITE)?;
        c.scatter(&dqc, dq, d.nh)?;
        c.scatter(&dkc, dk, d.nkv)?;
        c.scatter(&dvc, dv, d.nkv)?;
    }
    Ok(())
}
