//! Training attention flash-attention's way (attention_flash.wgsl): workgroups of 256
//! invocations hold 64 × 64 tiles of scores in workgroup memory, so no T×T matrix reaches
//! memory, and blocks of keys no query of a block sees (the causal upper half, earlier
//! sequences of a packed row, keys past a window) are skipped. The backward recomputes the
//! scores twice: once per block of queries (dq) and once per block of keys (dk, dv), as
//! FlashAttention-2 does without atomics.

use super::attention::{AttentionDims, Segments};
use super::grid_1d;
use super::matmul::SPLIT_WORKGROUPS;
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
    /// 1 where the backward's kernels split their heaviest blocks in two (block_part).
    split: u32,
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

/// The keys' kernel's variant for one of its passes (KV_PASS: 0 dk and dv, 1 dv alone, 2 dk
/// alone).
fn kv_variant(hs: usize, pass: u32) -> Variant {
    macro_rules! passes {
        ($($pass:literal: $suffix:literal),*) => {
            [$([
                Variant { name: concat!("1 dim", $suffix), constants: &[("DIMS", 1.0), ("KV_PASS", $pass as f64)] },
                Variant { name: concat!("2 dims", $suffix), constants: &[("DIMS", 2.0), ("KV_PASS", $pass as f64)] },
                Variant { name: concat!("4 dims", $suffix), constants: &[("DIMS", 4.0), ("KV_PASS", $pass as f64)] },
                Variant { name: concat!("8 dims", $suffix), constants: &[("DIMS", 8.0), ("KV_PASS", $pass as f64)] },
            ],)*]
        };
    }
    const VARIANTS: [[Variant; 4]; 2] = passes!(1: ", dv alone", 2: ", dk alone");
    match pass {
        0 => variant(hs),
        _ => VARIANTS[pass as usize - 1][dims(hs).trailing_zeros() as usize],
    }
}

/// The keys' kernel's passes on `ctx` with their FLOPs in products (a product: the scores'
/// multiply-adds): dk and dv in one (the scores, dp and the two sums), or apart
/// (`GpuContext::with_flash_kv_apart`): dv (the scores and its sum), then dk (the scores, dp
/// and its sum).
fn kv_passes(ctx: &GpuContext) -> &'static [(u32, f64)] {
    if ctx.flash_kv_apart() { &[(1, 2.0), (2, 3.0)] } else { &[(0, 4.0)] }
}

/// The params of queries from position `past` on, with segment ids or one sequence.
fn params(d: &AttentionDims, past: usize, segs: bool) -> Params {
    let segs = segs as u32;
    Params { b: d.b as u32, t: d.t as u32, nh: d.nh as u32, nkv: d.nkv as u32, hs: d.hs as u32, scale: d.scale, window: d.window as u32, past: past as u32, segs, split: 0 }
}

/// The backward kernels' parts per head and row (block_part): a block per part, or, where
/// `split`, the keys' blocks before n − ⌈n/2⌉ (of n; the queries' from ⌈n/2⌉ on) in two
/// parts each, so that no part takes more than ⌈n/2⌉ blocks of the other side.
fn block_parts(blocks: usize, split: bool) -> usize {
    let h = blocks.div_ceil(2);
    if split { 3 * (blocks - h) + (2 * h - blocks) } else { blocks }
}

/// What a split must save of the backward kernels' time (their parts' shares are written,
/// then summed: a second pass over dq, dk and dv).
const BLOCK_SPLIT_GAIN: f64 = 0.1;

/// Whether the backward's kernels split their causal blocks in two (block_part; the query
/// gradient's kernel mirrored) on `ctx`: 3 blocks or more, no window, and where the tuning
/// measured the workgroups the GPU runs at once, where that saves [`BLOCK_SPLIT_GAIN`] of a
/// launch's time, taken as the longer of its longest workgroup and all its work over the
/// workgroups at once (in blocks). SmolLM2 at 4 × 512 tokens on an H100 (264 at once): 8
/// against 1,296 / 264 = 4.9, split 4.9; one sequence, 8 against 4; Qwen2.5's 14 heads (8
/// against 7.6) or longer sequences, whole. The shares take 4 × B·T·NH·HS floats more of
/// scratch (SmolLM2 at 4 × 512: 19 MB), and only where the launch is small.
fn blocks_split(ctx: &GpuContext, d: &AttentionDims) -> bool {
    ctx.tile_choice().split_workgroups.filter(|&w| w > SPLIT_WORKGROUPS).is_some_and(|at_once| blocks_split_pays(at_once, d))
}

/// [`blocks_split`]'s rule for `at_once` workgroups at once.
fn blocks_split_pays(at_once: usize, d: &AttentionDims) -> bool {
    let blocks = d.t.div_ceil(BLOCK);
    if d.window != 0 || blocks < 3 {
        return false;
    }
    let work = (blocks * (blocks + 1) / 2 * d.nh * d.b) as f64 / at_once as f64;
    let time = |longest: usize| (longest as f64).max(work);
    time(blocks.div_ceil(2)) <= (1.0 - BLOCK_SPLIT_GAIN) * time(blocks)
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

/// A launch of `parts` workgroups per head and row (its blocks, or block_part's parts).
#[allow(clippy::too_many_arguments)]
fn launch(ctx: &GpuContext, entry: &'static str, inputs: &[&GpuBuffer], outputs: &[&GpuBuffer], params: &Params, d: &AttentionDims, parts: usize, flops: f64) -> Result<()> {
    launch_variant(ctx, entry, variant(d.hs), inputs, outputs, params, d, parts, flops)
}

#[allow(clippy::too_many_arguments)]
fn launch_variant(ctx: &GpuContext, entry: &'static str, variant: Variant, inputs: &[&GpuBuffer], outputs: &[&GpuBuffer], params: &Params, d: &AttentionDims, parts: usize, flops: f64) -> Result<()> {
    let kernel = Kernel::new(Shader::AttentionFlash, entry, 0).with_variant(variant);
    ctx.dispatch_counted(&kernel, inputs, outputs, params, [parts as u32, d.nh as u32, d.b as u32], flops)
}

/// out (B,T,NH,HS) and stats.lse, as attention.wgsl's forward computes them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(ctx: &GpuContext, out: &GpuBuffer, stats: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, seg: Segments, d: AttentionDims) -> Result<()> {
    // (q stands in for dout, which the forward does not read)
    launch(ctx, "attention_flash_forward", &[q, k, v, seg.ids, q], &[stats, out], &params(&d, 0, true), &d, d.t.div_ceil(BLOCK), 2.0 * product_flops(&d, seg.lens))
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
    launch(ctx, "attention_flash_forward", &[q, k_cache, v_cache, q, q], &[&lse, out], &params, &d, d.t.div_ceil(BLOCK), 4.0 * pairs * (d.nh * d.hs) as f64)
}

/// dq, dk, dv; `stats` holds (lse, Σ dout·out) per query row (attention_backward_prep).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(ctx: &GpuContext, dq: &GpuBuffer, dk: &GpuBuffer, dv: &GpuBuffer, dout: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, stats: &GpuBuffer, seg: Segments, d: AttentionDims) -> Result<()> {
    let product = product_flops(&d, seg.lens);
    let inputs = [q, k, v, seg.ids, dout];
    // split (blocks_split), both kernels take the heaviest blocks in two parts, written to two
    // shares and summed after
    let split = blocks_split(ctx, &d);
    let params = Params { split: split as u32, ..params(&d, 0, true) };
    let parts = block_parts(d.t.div_ceil(BLOCK), split);
    let rows = d.b * d.t * d.nh * d.hs;
    let share_q = if split { Some(ctx.alloc_scratch_f32(2 * rows)?) } else { None };
    launch(ctx, "attention_flash_backward_query", &inputs, &[stats, share_q.as_ref().unwrap_or(dq)], &params, &d, parts, 3.0 * product)?;
    if let Some(share_q) = &share_q {
        let kernel = Kernel::new(Shader::AttentionFlash, "attention_flash_sum_queries", 12);
        ctx.dispatch(&kernel, &[share_q], &[dq], &params, grid_1d(rows as u64, 256))?;
    }
    // a workgroup per block of keys (or part of one) and query head (a KV head's alone would
    // leave most of a GPU idle: 96 workgroups for SmolLM2 at 4 × 512 tokens), each query
    // head's share, and each part's, summed after
    let keys = |outputs: &[&GpuBuffer]| -> Result<()> {
        for &(pass, products) in kv_passes(ctx) {
            launch_variant(ctx, "attention_flash_backward_kv", kv_variant(d.hs, pass), &inputs, outputs, &params, &d, parts, products * product)?;
        }
        Ok(())
    };
    if d.nh == d.nkv && !split {
        return keys(&[stats, dk, dv]);
    }
    let shares = if split { 2 * rows } else { rows };
    let (share_k, share_v) = (ctx.alloc_scratch_f32(shares)?, ctx.alloc_scratch_f32(shares)?);
    keys(&[stats, &share_k, &share_v])?;
    let kernel = Kernel::new(Shader::AttentionFlash, "attention_flash_sum_heads", 8);
    ctx.dispatch(&kernel, &[&share_k, &share_v], &[dk, dv], &params, grid_1d((d.b * d.t * d.nkv * d.hs) as u64, 256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_blocks_split_where_the_longest_bounds_the_launch() {
        let smollm2 = AttentionDims::causal(4, 512, 9, 3, 64);
        // 8 blocks: 4 of 8 + 4 and 4 whole: 12 parts, the longest 4
        assert_eq!(block_parts(8, true), 12);
        assert_eq!((block_parts(7, true), block_parts(3, true), block_parts(8, false)), (10, 4, 8));
        // an H100's 264 at once: SmolLM2 at 4 × 512 (8 against 4.9) and one sequence (8
        // against 4) split; Qwen2.5's 14 heads (8 against 7.6), 8 × 512 and 4 × 1,024 do not
        assert!(blocks_split_pays(264, &smollm2));
        assert!(blocks_split_pays(264, &AttentionDims::causal(1, 512, 9, 3, 64)));
        assert!(!blocks_split_pays(264, &AttentionDims::causal(4, 512, 14, 2, 64)));
        assert!(!blocks_split_pays(264, &AttentionDims::causal(8, 512, 9, 3, 64)));
        assert!(!blocks_split_pays(264, &AttentionDims::causal(4, 1024, 9, 3, 64)));
        // nor a window, nor two blocks, nor a GPU of fewer multiprocessors (48 at once)
        assert!(!blocks_split_pays(264, &AttentionDims { window: 256, ..smollm2 }));
        assert!(!blocks_split_pays(264, &AttentionDims::causal(4, 128, 9, 3, 64)));
        assert!(!blocks_split_pays(48, &smollm2));
    }
}
