//! Training attention flash-attention's way (attention_flash.wgsl): workgroups of 256
//! invocations hold 64 × 64 tiles of scores in workgroup memory, so no T×T matrix reaches
//! memory, and blocks of keys no query of a block sees (the causal upper half, earlier
//! sequences of a packed row, keys past a window) are skipped. The backward recomputes the
//! scores twice: once per block of queries (dq) and once per block of keys (dk, dv), as
//! FlashAttention-2 does without atomics.

use super::attention::{AttentionDims, Segments};
use super::grid_1d;
use crate::gpu::{Kernel, Shader, Variant};
use crate::{GpuBuffer, GpuContext, Result};

/// The largest head the kernels take (8 dims per invocation).
pub const MAX_HEAD_SIZE: usize = 128;

/// Rows of queries or keys per workgroup.
const BLOCK: usize = 64;

/// attention_flash.wgsl's workgroup memory: its stage, its tile, a reduction's 256 partials
/// and five per-row arrays, in 4-byte words.
const WORKGROUP_BYTES: u32 = 4 * (4 * 544 + 4 * 1088 + 256 + 5 * 64);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    t: u32,
    nh: u32,
    nkv: u32,
    hs: u32,
    scale: f32,
    window: u32,
    /// The queries' first position (a prompt over the KV cache).
    past: u32,
    /// 1 where the segment ids' binding holds them; 0: one sequence.
    segs: u32,
}

/// Whether the kernels take `d` on this adapter: heads of up to 128, and room for their
/// workgroup memory and workgroups of 256.
pub(crate) fn fits(ctx: &GpuContext, d: &AttentionDims) -> bool {
    let limits = ctx.limits();
    d.hs <= MAX_HEAD_SIZE && limits.max_compute_workgroup_storage_size >= WORKGROUP_BYTES && limits.max_compute_invocations_per_workgroup >= 256
}

/// The most loop iterations one invocation runs (lavapipe's limit counts them): the keys'
/// kernel's, over the blocks of queries × two products (16-dim chunks: staging 2 × 4, 16
/// steps) and two sums over the tile (4 stagings of 16 rows, 16 rows × the dims × 4 rows),
/// with some to spare.
pub(crate) fn loop_iterations(d: &AttentionDims) -> usize {
    let per_block = 2 * d.hs.div_ceil(16) * 24 + 2 * 4 * (d.hs / 16 + 16 * (1 + 5 * dims(d.hs))) + 40;
    d.t.div_ceil(BLOCK) * per_block
}

/// Dims of a head per invocation.
fn dims(hs: usize) -> usize {
    hs.div_ceil(16).next_power_of_two()
}

fn variant(hs: usize) -> Variant {
    const VARIANTS: [Variant; 4] = [
        Variant { name: "1 dim", constants: &[("DIMS", 1.0)] },
        Variant { name: "2 dims", constants: &[("DIMS", 2.0)] },
        Variant { name: "4 dims", constants: &[("DIMS", 4.0)] },
        Variant { name: "8 dims", constants: &[("DIMS", 8.0)] },
    ];
    VARIANTS[dims(hs).trailing_zeros() as usize]
}

/// The params of queries from position `past` on, with segment ids or one sequence.
fn params(d: &AttentionDims, past: usize, segs: bool) -> Params {
    let segs = segs as u32;
    Params { b: d.b as u32, t: d.t as u32, nh: d.nh as u32, nkv: d.nkv as u32, hs: d.hs as u32, scale: d.scale, window: d.window as u32, past: past as u32, segs }
}

/// Multiply-adds of one product over the pairs that see each other (counted in profiles):
/// each run's causal half, or its window, per query head.
fn product_flops(d: &AttentionDims, lens: &[u32]) -> f64 {
    let pairs: f64 = lens
        .iter()
        .map(|&l| {
            let (l, w) = (l as f64, if d.window == 0 { f64::INFINITY } else { d.window as f64 });
            if l <= w { l * (l + 1.0) / 2.0 } else { w * (w + 1.0) / 2.0 + (l - w) * w }
        })
        .sum();
    2.0 * pairs * (d.nh * d.hs) as f64
}

fn launch(ctx: &GpuContext, entry: &'static str, inputs: &[&GpuBuffer], outputs: &[&GpuBuffer], params: &Params, d: &AttentionDims, heads: usize, flops: f64) -> Result<()> {
    let kernel = Kernel::new(Shader::AttentionFlash, entry, 0).with_variant(variant(d.hs));
    ctx.dispatch_counted(&kernel, inputs, outputs, params, [d.t.div_ceil(BLOCK) as u32, heads as u32, d.b as u32], flops)
}

/// out (B,T,NH,HS) and stats.lse, as attention.wgsl's forward computes them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(ctx: &GpuContext, out: &GpuBuffer, stats: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, seg: Segments, d: AttentionDims) -> Result<()> {
    // (q stands in for dout, which the forward does not read)
    launch(ctx, "attention_flash_forward", &[q, k, v, seg.ids, q], &[stats, out], &params(&d, 0, true), &d, d.nh, 2.0 * product_flops(&d, seg.lens))
}

/// A prompt over the KV cache (`d.b` = 1): out and q (T, NH, HS) for the tokens at positions
/// past..past+T, whose keys and values the caches' rows 0..past+T (NKV, HS) already hold.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_cached(ctx: &GpuContext, out: &GpuBuffer, q: &GpuBuffer, k_cache: &GpuBuffer, v_cache: &GpuBuffer, past: usize, d: AttentionDims) -> Result<()> {
    // the forward's lse, which a prompt does not keep; q stands in for the segment ids (one
    // sequence: not read) and for dout
    let lse = ctx.alloc_scratch_f32(2 * d.t * d.nh)?;
    let params = params(&d, past, false);
    // each query sees the cache's `past` keys and the prompt's up to its own
    let pairs = (d.t * past + d.t * (d.t + 1) / 2) as f64;
    launch(ctx, "attention_flash_forward", &[q, k_cache, v_cache, q, q], &[&lse, out], &params, &d, d.nh, 4.0 * pairs * (d.nh * d.hs) as f64)
}

/// dq, dk, dv; `stats` holds (lse, Σ dout·out) per query row (attention_backward_prep).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(ctx: &GpuContext, dq: &GpuBuffer, dk: &GpuBuffer, dv: &GpuBuffer, dout: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, stats: &GpuBuffer, seg: Segments, d: AttentionDims) -> Result<()> {
    let product = product_flops(&d, seg.lens);
    let inputs = [q, k, v, seg.ids, dout];
    let params = params(&d, 0, true);
    launch(ctx, "attention_flash_backward_query", &inputs, &[stats, dq], &params, &d, d.nh, 3.0 * product)?;
    // a workgroup per block of keys and query head (a KV head's alone would leave most of a
    // GPU idle: 96 workgroups for SmolLM2 at 4 × 512 tokens), each query head's share summed
    // after where several share a KV head
    if d.nh == d.nkv {
        return launch(ctx, "attention_flash_backward_kv", &inputs, &[stats, dk, dv], &params, &d, d.nh, 4.0 * product);
    }
    let (share_k, share_v) = (ctx.alloc_scratch_f32(d.b * d.t * d.nh * d.hs)?, ctx.alloc_scratch_f32(d.b * d.t * d.nh * d.hs)?);
    launch(ctx, "attention_flash_backward_kv", &inputs, &[stats, &share_k, &share_v], &params, &d, d.nh, 4.0 * product)?;
    let kernel = Kernel::new(Shader::AttentionFlash, "attention_flash_sum_heads", 8);
    ctx.dispatch(&kernel, &[&share_k, &share_v], &[dk, dv], &params, grid_1d((d.b * d.t * d.nkv * d.hs) as u64, 256))
}
