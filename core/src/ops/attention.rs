//! Causal grouped-query self-attention over packed examples. The attention.wgsl kernels use
//! an online softmax (memory O(T·HS)); GPUs train with attention_flash.rs's tiles of scores in
//! workgroup memory, software adapters with batched matmuls over chunks of materialized scores
//! (attention_matmul.rs).

use super::rope::{self, RopeDims};
use super::{attention_flash, attention_matmul, check_len, grid_1d};
use crate::error::ensure;
use crate::gpu::{Kernel, KernelPaths, Shader, Variant};
use crate::{GpuBuffer, GpuContext, Result};

/// The largest head size the kernels hold in registers (attention.wgsl's MAX_HS).
pub const MAX_HEAD_SIZE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDims {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
    /// Multiplies q·k: 1/√HS, or Gemma's query_pre_attn_scalar^−½.
    pub scale: f32,
    /// A query at t sees keys t − window < j ≤ t (sliding-window layers); 0: all before it.
    pub window: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    t: u32,
    nh: u32,
    nkv: u32,
    hs: u32,
    scale: f32,
    past: u32,
    window: u32,
    /// The backward's rope (attention.wgsl's Params say how): its rotary dims (0: none), its
    /// factor, always 0, where the positions start in the segment ids' binding, and its
    /// frequencies.
    rot: u32,
    mscale: f32,
    zero: u32,
    pos_at: u32,
    /// The decode kernel: 1 where the token's key and value come apart from the cache; the
    /// token's row in its buffers.
    append: u32,
    row: u32,
    /// The decode kernel's keys per workgroup where it splits a head's keys (0: it does not);
    /// over a batch: the keys past which a row splits its keys (`DECODE_SPLIT_KEYS`; 0: never).
    split_len: u32,
    /// The decode kernel over a batch ([`attention_decode_batch`]): floats of each row's part
    /// of the scratch; 0: one token.
    batch_scratch: u32,
    freqs: [f32; MAX_FUSED_FREQS],
}

// attention.wgsl's Params place the frequencies, an array of vec4s, 16-byte aligned
const _: () = assert!(std::mem::offset_of!(Params, freqs) % 16 == 0);

/// The most rope frequencies attention's kernels take in their params (heads of up to 224
/// rotary dims; wider ones get rope's own launch).
const MAX_FUSED_FREQS: usize = 112;

/// Whether attention's kernels can apply `rope` themselves (the backward's, and a decoded
/// token's): its frequencies fit their params.
pub fn rope_fits(rope: &RopeDims) -> bool {
    rope.rotary / 2 <= MAX_FUSED_FREQS
}

impl Params {
    /// Rope's rotation for the kernels that apply it (`rope_fits`): its rotary dims, its
    /// factor and its frequencies.
    fn set_rope(&mut self, op: &str, r: &RopeDims) -> Result<()> {
        rope::check(op, r)?;
        ensure(rope_fits(r), || format!("{op}: rope over {} rotary dims; at most {} in attention's params", r.rotary, 2 * MAX_FUSED_FREQS))?;
        self.rot = r.rotary as u32;
        self.mscale = r.longrope.map_or(1.0, |l| l.mscale);
        self.freqs[..r.rotary / 2].copy_from_slice(&rope::frequencies(r));
        Ok(())
    }
}

impl AttentionDims {
    /// Plain causal attention: scale 1/√HS, no window.
    pub fn causal(b: usize, t: usize, nh: usize, nkv: usize, hs: usize) -> Self {
        AttentionDims { b, t, nh, nkv, hs, scale: 1.0 / (hs as f32).sqrt(), window: 0 }
    }

    fn check(&self, op: &str) -> Result<Params> {
        ensure(self.hs <= MAX_HEAD_SIZE && self.hs > 0, || {
            format!("{op}: head size {} is above the supported {MAX_HEAD_SIZE}", self.hs)
        })?;
        ensure(self.nkv > 0 && self.nh.is_multiple_of(self.nkv), || {
            format!("{op}: {} query heads do not divide into {} KV heads", self.nh, self.nkv)
        })?;
        Ok(Params {
            b: self.b as u32,
            t: self.t as u32,
            nh: self.nh as u32,
            nkv: self.nkv as u32,
            hs: self.hs as u32,
            scale: self.scale,
            window: self.window as u32,
            ..bytemuck::Zeroable::zeroed()
        })
    }

    /// attention.wgsl, or its build for heads above 128.
    fn shader(&self) -> Shader {
        if self.hs > 128 {
            Shader::AttentionWide
        } else {
            Shader::Attention
        }
    }

    fn q_len(&self) -> usize {
        self.b * self.t * self.nh * self.hs
    }

    fn kv_len(&self) -> usize {
        self.b * self.t * self.nkv * self.hs
    }

    /// Length of the stats buffer: (B, NH, T, 2).
    pub fn stats_len(&self) -> usize {
        self.b * self.nh * self.t * 2
    }
}

/// The segment ids (B, T) of packed rows, in which a token attends only to earlier tokens of
/// its own id, and the runs of equal ids that the matmul kernels attend within, longest
/// first. Each id must mark one contiguous run of its row (as `train::batch::pack` writes
/// them).
#[derive(Clone, Copy)]
pub struct Segments<'a> {
    pub ids: &'a GpuBuffer,
    /// (b, start, len) per run, as u32.
    pub runs: &'a GpuBuffer,
    /// The runs' lengths, in the same order.
    pub lens: &'a [u32],
    /// The ids and the tokens' positions in one binding, where they lie so (a view from the
    /// ids' start over the positions), and where the positions start in it, in words: what
    /// lets the backward kernels apply rope's backward themselves ([`RopeGrad`]).
    pub with_pos: Option<(&'a GpuBuffer, usize)>,
}

/// Rope's backward, for attention's backward to apply to dq and dk: the positions (the same
/// as those [`Segments::with_pos`] holds, where it holds them) and the rotation.
#[derive(Clone, Copy)]
pub struct RopeGrad<'a> {
    pub pos: &'a GpuBuffer,
    pub dims: RopeDims,
}

/// The runs of equal ids in each row of `ids` (B rows of `t`), longest first (so that the
/// matmul kernels' chunks pad each run only to the longest of its chunk): their (b, start,
/// len) triples for [`Segments::runs`] and their lengths. Errors if an id comes back after
/// another within a row.
pub fn segment_runs(ids: &[u32], t: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    ensure(t > 0 && ids.len().is_multiple_of(t), || format!("segment ids: {} ids are not rows of {t}", ids.len()))?;
    let mut runs = Vec::new();
    for (b, row) in ids.chunks(t).enumerate() {
        let mut seen = std::collections::HashSet::new();
        let mut start = 0;
        for run in row.chunk_by(|x, y| x == y) {
            ensure(seen.insert(run[0]), || format!("segment ids: id {} comes back after another in row {b}; each sequence must be one run", run[0]))?;
            runs.push([b as u32, start as u32, run.len() as u32]);
            start += run.len();
        }
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r[2]));
    Ok((runs.iter().flatten().copied().collect(), runs.iter().map(|r| r[2]).collect()))
}

/// How the training kernels compute attention (tests run all four).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernels {
    /// One invocation per row reads the other side from memory (software adapters, for
    /// sequences too long for `Matmul`'s chunks).
    Rows,
    /// Workgroups of 64 rows stage the other side in workgroup memory (GPUs: inference over a
    /// KV cache, and training where `Matmul`'s chunks cannot take the sizes).
    Tiled,
    /// The scores of a chunk of heads materialized and the products run as batched matmuls
    /// (training on software adapters: attention_matmul.rs).
    Matmul,
    /// 64 × 64 tiles of scores in workgroup memory, flash-attention's way (training on GPUs:
    /// attention_flash.rs).
    Flash,
}

impl AttentionKernels {
    pub const ALL: [AttentionKernels; 4] = [AttentionKernels::Rows, AttentionKernels::Tiled, AttentionKernels::Matmul, AttentionKernels::Flash];

    /// What training prefers (unless the context names kernels): the flash kernels on GPUs,
    /// the matmuls elsewhere. On an H200 the matmuls made SmolLM2's training step twice as
    /// fast as the tiled kernels did (2,324 → 4,677 tokens/s at 4 × 512 tokens; docs/PERF.md,
    /// 2026-12-04) but still took 38 % of it, at 2 TFLOP/s; on llvmpipe they run 1.5 times
    /// faster than the flash kernels and several times faster than the per-row ones.
    pub fn for_training(ctx: &GpuContext) -> Self {
        ctx.attention_kernels().unwrap_or(if ctx.kernel_paths() == KernelPaths::Gpu { AttentionKernels::Flash } else { AttentionKernels::Matmul })
    }

    /// What inference over a KV cache prefers (unless the context names kernels): the flash
    /// kernels on GPUs (the tiled ones took 57 % of SmolLM2's 128-token prefill on an H200,
    /// a workgroup of 64 queries each walking the keys), the per-row ones elsewhere (on
    /// llvmpipe the tiled kernels were 2–2.6× slower). `Matmul` has no cached kernels and runs
    /// the per-row ones; `Flash` gives way to the tiled kernels where it cannot take the heads.
    pub fn for_cache(ctx: &GpuContext) -> Self {
        ctx.attention_kernels().unwrap_or(if ctx.kernel_paths() == KernelPaths::Gpu { AttentionKernels::Flash } else { AttentionKernels::Rows })
    }

    /// This adapter's kernels where the matmuls do not run: the tiled ones on GPUs, the
    /// per-row ones elsewhere.
    pub fn without_matmuls(ctx: &GpuContext) -> Self {
        if ctx.kernel_paths() == KernelPaths::Gpu {
            AttentionKernels::Tiled
        } else {
            AttentionKernels::Rows
        }
    }

    /// What runs `d` over runs of these lengths (longest first): the preference, but `Flash`
    /// gives way where it cannot take `d` (heads above 128, too little workgroup memory) to
    /// the matmuls, and `Matmul` where its chunks cannot take the sizes
    /// (`attention_matmul::pairs_per_chunk`) to the tiled kernels on GPUs, the per-row ones
    /// elsewhere. On lavapipe the matmuls also take over from the others where those would
    /// loop past its limit (`LLVMPIPE_LOOP_LIMIT`).
    pub fn for_dims(self, ctx: &GpuContext, d: &AttentionDims, lens: &[u32]) -> Self {
        let longest = lens.first().map_or(0, |&l| l as usize);
        let matmul_fits = attention_matmul::pairs_per_chunk(ctx, d, longest).is_some();
        let chosen = match self {
            AttentionKernels::Flash if !attention_flash::fits(ctx, d) => {
                if matmul_fits {
                    AttentionKernels::Matmul
                } else {
                    AttentionKernels::without_matmuls(ctx)
                }
            }
            AttentionKernels::Matmul if !matmul_fits => AttentionKernels::without_matmuls(ctx),
            kernels => kernels,
        };
        if chosen != AttentionKernels::Matmul && ctx.is_llvmpipe() && !within_llvmpipe_loops(chosen, d) && matmul_fits {
            AttentionKernels::Matmul
        } else {
            chosen
        }
    }

    /// `Flash` where it takes `d` on this adapter, else the kernels that attend without
    /// matmuls; the others as they are.
    fn runnable(self, ctx: &GpuContext, d: &AttentionDims) -> Self {
        if self == AttentionKernels::Flash && !attention_flash::fits(ctx, d) {
            AttentionKernels::without_matmuls(ctx)
        } else {
            self
        }
    }

    /// Parses a name (`HEARTH_ATTENTION`): rows, tiled, matmul or flash.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_lowercase().as_str() {
            "rows" => Ok(AttentionKernels::Rows),
            "tiled" => Ok(AttentionKernels::Tiled),
            "matmul" => Ok(AttentionKernels::Matmul),
            "flash" => Ok(AttentionKernels::Flash),
            other => Err(crate::Error::Shape(format!("attention kernels {other:?}: expected rows, tiled, matmul or flash"))),
        }
    }

    /// This variant's entry point (`rows` or `tiled`; `Matmul` launches none of these) and its
    /// grid over `heads` heads.
    fn launch(self, rows: &'static str, tiled: &'static str, d: &AttentionDims, heads: usize) -> (&'static str, [u32; 3]) {
        match self {
            AttentionKernels::Tiled => (tiled, [d.t.div_ceil(64) as u32, heads as u32, d.b as u32]),
            _ => (rows, grid_1d((d.b * heads * d.t) as u64, 64)),
        }
    }
}

/// out (B,T,NH,HS) and stats.lse from q, k, v and segment ids seg (B,T).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(ctx: &GpuContext, out: &GpuBuffer, stats: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, seg: Segments, d: AttentionDims) -> Result<()> {
    attention_forward_with(ctx, AttentionKernels::for_training(ctx).for_dims(ctx, &d, seg.lens), out, stats, q, k, v, seg, d)
}

/// [`attention_forward`] with the kernels given.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_with(ctx: &GpuContext, kernels: AttentionKernels, out: &GpuBuffer, stats: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, seg: Segments, d: AttentionDims) -> Result<()> {
    let op = "attention_forward";
    let params = d.check(op)?;
    let kernels = kernels.runnable(ctx, &d);
    check_llvmpipe_loops(ctx, op, kernels, &d)?;
    for (name, buf, len) in [("q", q, d.q_len()), ("k", k, d.kv_len()), ("v", v, d.kv_len()), ("seg", seg.ids, d.b * d.t), ("out", out, d.q_len()), ("stats", stats, d.stats_len())] {
        check_len(op, name, buf, len)?;
    }
    if kernels == AttentionKernels::Matmul {
        check_len(op, "runs", seg.runs, 3 * seg.lens.len())?;
        return ctx.profile_scope("attention", || attention_matmul::forward(ctx, out, stats, q, k, v, seg, d));
    }
    if kernels == AttentionKernels::Flash {
        return attention_flash::forward(ctx, out, stats, q, k, v, seg, d);
    }
    let (entry, grid) = kernels.launch("attention_forward_rows", "attention_forward_tiled", &d, d.nh);
    ctx.dispatch(&Kernel::new(d.shader(), entry, 0), &[q, k, v, seg.ids], &[out, stats], &params, grid)
}

/// dq, dk, dv from dout and the forward's tensors; `stats` gains Σ dout·out on the way. With
/// `rope`, q and k were rotated: dq and dk are the gradients of q and k before rope.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(ctx: &GpuContext, dq: &GpuBuffer, dk: &GpuBuffer, dv: &GpuBuffer, dout: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, out: &GpuBuffer, stats: &GpuBuffer, seg: Segments, d: AttentionDims, rope: Option<RopeGrad>) -> Result<()> {
    attention_backward_with(ctx, AttentionKernels::for_training(ctx).for_dims(ctx, &d, seg.lens), dq, dk, dv, dout, q, k, v, out, stats, seg, d, rope)
}

/// [`attention_backward`] with the kernels given. The per-row and tiled kernels apply rope's
/// backward as they store dq and dk, where the segment ids' binding holds the positions and
/// the params the frequencies; otherwise rope's own launch follows.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(ctx: &GpuContext, kernels: AttentionKernels, dq: &GpuBuffer, dk: &GpuBuffer, dv: &GpuBuffer, dout: &GpuBuffer, q: &GpuBuffer, k: &GpuBuffer, v: &GpuBuffer, out: &GpuBuffer, stats: &GpuBuffer, seg: Segments, d: AttentionDims, rope: Option<RopeGrad>) -> Result<()> {
    let op = "attention_backward";
    let mut params = d.check(op)?;
    let kernels = kernels.runnable(ctx, &d);
    let fuses_rope = matches!(kernels, AttentionKernels::Rows | AttentionKernels::Tiled);
    let fused = match (rope, seg.with_pos) {
        (Some(r), Some((ids, pos_at))) if fuses_rope && rope_fits(&r.dims) => {
            params.set_rope(op, &r.dims)?;
            check_len(op, "positions", ids, pos_at + d.b * d.t)?;
            params.pos_at = pos_at as u32;
            Some(ids)
        }
        _ => None,
    };
    let ids = fused.unwrap_or(seg.ids);
    check_llvmpipe_loops(ctx, op, kernels, &d)?;
    for (name, buf, len) in [
        ("dout", dout, d.q_len()), ("q", q, d.q_len()), ("k", k, d.kv_len()), ("v", v, d.kv_len()),
        ("out", out, d.q_len()), ("stats", stats, d.stats_len()), ("seg", seg.ids, d.b * d.t),
        ("dq", dq, d.q_len()), ("dk", dk, d.kv_len()), ("dv", dv, d.kv_len()),
    ] {
        check_len(op, name, buf, len)?;
    }
    if matches!(kernels, AttentionKernels::Matmul | AttentionKernels::Flash) {
        let q_rows = grid_1d((d.b * d.nh * d.t) as u64, 64);
        ctx.dispatch(&Kernel::new(d.shader(), "attention_backward_prep", 6), &[dout, out], &[stats], &params, q_rows)?;
        if kernels == AttentionKernels::Flash {
            attention_flash::backward(ctx, dq, dk, dv, dout, q, k, v, stats, seg, d)?;
        } else {
            check_len(op, "runs", seg.runs, 3 * seg.lens.len())?;
            ctx.profile_scope("attention", || attention_matmul::backward(ctx, dq, dk, dv, dout, q, k, v, stats, seg, d))?;
        }
    } else {
        // the queries' kernel also stores each row's Σ dout·out, which the keys' kernel reads
        let (entry, grid) = kernels.launch("attention_backward_query_rows", "attention_backward_query_tiled", &d, d.nh);
        ctx.dispatch(&Kernel::new(d.shader(), entry, 9), &[dout, q, k, v, out, ids], &[stats, dq], &params, grid)?;
        let (entry, grid) = kernels.launch("attention_backward_kv_rows", "attention_backward_kv_tiled", &d, d.nkv);
        ctx.dispatch(&Kernel::new(d.shader(), entry, 17), &[dout, q, k, v, stats, ids], &[dk, dv], &params, grid)?;
    }
    match rope {
        Some(r) if fused.is_none() => rope::rope_backward_in_place(ctx, dq, dk, r.pos, r.dims),
        _ => Ok(()),
    }
}

/// Mesa's llvmpipe (lavapipe; Mesa 22.3 here and on CI) ends a shader's loops once an
/// invocation has run this many iterations of them in all (`LP_MAX_TGSI_LOOP_ITERATIONS`,
/// shared between every loop), silently: the kernel then returns wrong values (SmolLM2's
/// keys' and values' gradients were NaN at 512 tokens, SwiftShader's right; docs/PERF.md).
const LLVMPIPE_LOOP_LIMIT: usize = 65_535;

/// Whether `kernels` stay within lavapipe's loop limit for `d` (the matmuls always do). The
/// per-row and tiled kernels' busiest invocation (the keys' and values' gradient of the first
/// key) loops over its group's query heads × the queries of the row × a score's and the sums'
/// loops over the head.
fn within_llvmpipe_loops(kernels: AttentionKernels, d: &AttentionDims) -> bool {
    match kernels {
        AttentionKernels::Matmul => true,
        AttentionKernels::Flash => attention_flash::loop_iterations(d) < LLVMPIPE_LOOP_LIMIT,
        // (and rope's backward as it stores: at most HS/2 rotated pairs; and the tiled
        // kernels' bisection for a run's start: at most 32 steps)
        _ => (d.nh / d.nkv).max(1) * d.t * (3 * d.hs + 2) + d.hs / 2 + 32 < LLVMPIPE_LOOP_LIMIT,
    }
}

/// Whether a chunk of `d.t` tokens over a cache of `past` goes a token at a time through the
/// decode kernel ([`attention_decode`], whose invocations each take a share of the context:
/// within lavapipe's limit up to 32K tokens with heads of 256, 120K with heads of 64)
/// instead of [`attention_forward_cached`], which gives each query one invocation that walks
/// the whole cache: on lavapipe past the limit's reach (about 500 tokens of heads of 64),
/// where the head size suits the decode kernel.
pub fn cached_row_by_row(ctx: &GpuContext, d: &AttentionDims, past: usize) -> bool {
    ctx.is_llvmpipe() && d.hs.is_multiple_of(4) && !cached_within_llvmpipe_loops(d, past)
}

/// attention_forward_cached's loops per invocation within lavapipe's limit: each key of the
/// cache, a score's and the sum's loops over the head (and the tiled kernel's staging of
/// the keys and values, HS/64 values of each key per invocation, and its loop over tiles).
fn cached_within_llvmpipe_loops(d: &AttentionDims, past: usize) -> bool {
    (past + d.t) * (2 * d.hs + 2 + d.hs.div_ceil(64)) < LLVMPIPE_LOOP_LIMIT
}

/// The error for kernels lavapipe would run past its loop limit.
fn check_llvmpipe_loops(ctx: &GpuContext, op: &str, kernels: AttentionKernels, d: &AttentionDims) -> Result<()> {
    ensure(!ctx.is_llvmpipe() || within_llvmpipe_loops(kernels, d), || {
        format!(
            "{op}: the {kernels:?} kernels over {} tokens with {} query heads of {} per KV head would loop past lavapipe's limit of {LLVMPIPE_LOOP_LIMIT} iterations per invocation, where it returns wrong values: use the matmul attention (HEARTH_ATTENTION=matmul) or shorter sequences",
            d.t,
            d.nh / d.nkv,
            d.hs
        )
    })
}

/// Inference over a KV cache, one sequence (`d.b` must be 1): out and q are (T, NH, HS) for
/// the tokens at positions past..past+T; k_cache and v_cache (rows ≥ past+T, NKV, HS) already
/// hold their keys and values. Query t attends to cache rows 0..=past+t.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_cached(ctx: &GpuContext, out: &GpuBuffer, q: &GpuBuffer, k_cache: &GpuBuffer, v_cache: &GpuBuffer, past: usize, d: AttentionDims) -> Result<()> {
    attention_forward_cached_with(ctx, AttentionKernels::for_cache(ctx), out, q, k_cache, v_cache, past, d)
}

/// [`attention_forward_cached`] with the kernels given: `Tiled`'s workgroups stream the
/// cache's keys and values through workgroup memory for 64 queries at a time (GPUs); the
/// others give each query and head an invocation that reads the cache itself.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_cached_with(ctx: &GpuContext, kernels: AttentionKernels, out: &GpuBuffer, q: &GpuBuffer, k_cache: &GpuBuffer, v_cache: &GpuBuffer, past: usize, d: AttentionDims) -> Result<()> {
    let op = "attention_forward_cached";
    ensure(d.b == 1, || format!("{op}: one sequence at a time, got batch {}", d.b))?;
    let mut params = d.check(op)?;
    params.past = past as u32;
    ensure(!ctx.is_llvmpipe() || cached_within_llvmpipe_loops(&d, past), || {
        format!("{op}: {} tokens over a cache of {past} would loop past lavapipe's limit of {LLVMPIPE_LOOP_LIMIT} iterations per invocation, where it returns wrong values: run them a token at a time (attention_decode)", d.t)
    })?;
    let cache_len = (past + d.t) * d.nkv * d.hs;
    for (name, buf, len) in [("q", q, d.q_len()), ("k_cache", k_cache, cache_len), ("v_cache", v_cache, cache_len), ("out", out, d.q_len())] {
        check_len(op, name, buf, len)?;
    }
    let (entry, grid) = match kernels.runnable(ctx, &d) {
        AttentionKernels::Flash => return attention_flash::forward_cached(ctx, out, q, k_cache, v_cache, past, d),
        AttentionKernels::Tiled => ("attention_forward_cached_tiled", [d.t.div_ceil(64) as u32, d.nh as u32, 1]),
        _ => (op, grid_1d((d.nh * d.t) as u64, 64)),
    };
    ctx.dispatch(&Kernel::new(d.shader(), entry, 25), &[q, k_cache, v_cache], &[out], &params, grid)
}

/// One token that [`attention_decode`] attends with: row `row` of `q` (its query, NH·HS) and of
/// `out`, at position `past` of its sequence; its own key and value the caches' row `past`,
/// or, where `new` gives them, row `row` of those buffers (NKV·HS each), which the launches
/// store into that row of the caches. With `rope`, its query and new key come unrotated, and
/// the launches rotate them to position `past` (the cache's keys are rotated).
#[derive(Clone, Copy)]
pub struct DecodeToken<'a> {
    pub q: &'a GpuBuffer,
    pub out: &'a GpuBuffer,
    pub new: Option<(&'a GpuBuffer, &'a GpuBuffer)>,
    pub row: usize,
    pub past: usize,
    pub rope: Option<RopeDims>,
}

/// Keys per workgroup from which the GPU kernels split a decoded token's keys over several
/// workgroups per head (one key per invocation of the scores' pass), and the most
/// workgroups per head they split them over (attention.wgsl holds a copy for a batch's rows,
/// which split in the kernel: ops' batch test fails where the two differ).
const DECODE_SPLIT_KEYS: usize = 256;
const DECODE_MAX_SPLITS: usize = 32;

/// The scratch [`attention_decode`] takes for `nh` heads of `hs` over contexts of up to
/// `max_seq` tokens: the scores, and after them each split's maximum, sum and sums of values.
pub fn decode_scratch_len(nh: usize, hs: usize, max_seq: usize) -> usize {
    nh * max_seq + nh * DECODE_MAX_SPLITS * (hs + 2)
}

/// Decoding one token (T = 1, one sequence) over a KV cache: out (NH, HS) =
/// softmax(scale·q·kᵀ)·v, with `scores` ([`decode_scratch_len`]) as scratch. The same result
/// as [`attention_forward_cached`] with T = 1, in one launch of a workgroup per head whose
/// invocations share the keys instead of one invocation per head. On the GPU kernel paths a
/// context of more than `DECODE_SPLIT_KEYS` keys is split over several workgroups per head,
/// and a second launch combines their parts. HS must be a multiple of 4.
pub fn attention_decode(ctx: &GpuContext, token: DecodeToken, (k_cache, v_cache): (&GpuBuffer, &GpuBuffer), scores: &GpuBuffer, d: AttentionDims) -> Result<()> {
    let op = "attention_decode";
    let DecodeToken { q, out, new, row, past, rope } = token;
    ensure(d.b == 1 && d.t == 1, || format!("{op}: one token of one sequence, got batch {} × {} tokens", d.b, d.t))?;
    let mut params = decode_params(op, d, new.is_some(), rope)?;
    let n = past + 1;
    let (split_len, splits) = decode_split(ctx.kernel_paths(), past, d.window);
    (params.past, params.row, params.split_len) = (past as u32, row as u32, split_len as u32);
    check_decode_loops(ctx, op, past, d)?;
    let cache_len = n * d.nkv * d.hs;
    let rows = row + 1;
    for (name, buf, len) in [("k_cache", k_cache, cache_len), ("v_cache", v_cache, cache_len), ("scores", scores, decode_scratch_needs(d, past, splits))] {
        check_len(op, name, buf, len)?;
    }
    check_decode_rows(op, q, out, new, rows, d)?;
    // (without `new`, the query stands in for its bindings: never read; and for the batch's
    // table, read only in a batch)
    let (k_new, v_new) = new.unwrap_or((q, q));
    launch_decode(ctx, d, &params, [q, k_new, v_new, q], [scores, out, k_cache, v_cache], [d.nh as u32, splits as u32, 1], splits > 1)
}

/// One sequence of [`attention_decode_batch`]: its token goes to position `past`, and its
/// caches start `at` floats into the layer's buffers of caches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchSeq {
    pub past: usize,
    pub at: usize,
}

/// A batch's tokens, one per sequence, whose caches lie in one pair of buffers (a server's
/// requests), for [`attention_decode_batch`]: row r of the tokens' buffers (as
/// [`DecodeToken`]'s, with their keys and values apart) is `seqs[r]`'s. `table` holds
/// [`decode_batch_table`] of `seqs`, written once for every layer of a step.
#[derive(Clone, Copy)]
pub struct DecodeBatch<'a> {
    pub q: &'a GpuBuffer,
    pub out: &'a GpuBuffer,
    pub new: (&'a GpuBuffer, &'a GpuBuffer),
    pub rope: Option<RopeDims>,
    pub caches: (&'a GpuBuffer, &'a GpuBuffer),
    pub seqs: &'a [BatchSeq],
    pub table: &'a GpuBuffer,
}

/// What [`attention_decode_batch`] reads of `seqs` from its table: each row's position and
/// where its caches start, in vec4s.
pub fn decode_batch_table(seqs: &[BatchSeq]) -> Vec<u32> {
    seqs.iter().flat_map(|s| [s.past as u32, (s.at / 4) as u32]).collect()
}

/// [`attention_decode`] of a batch's tokens in one launch (and one more where a row's keys
/// split): a workgroup per head and row, each row over its own cache, into its own part of
/// `scores` ([`decode_scratch_len`] floats each, `per_row`). The same results as a launch per
/// row.
pub fn attention_decode_batch(ctx: &GpuContext, batch: DecodeBatch, scores: &GpuBuffer, per_row: usize, d: AttentionDims) -> Result<()> {
    let op = "attention_decode_batch";
    let DecodeBatch { q, out, new, rope, caches: (k_caches, v_caches), seqs, table } = batch;
    ensure(d.b == 1 && d.t == 1 && !seqs.is_empty(), || format!("{op}: one token per sequence, got batch {} × {} tokens of {} sequences", d.b, d.t, seqs.len()))?;
    let mut params = decode_params(op, d, true, rope)?;
    // (the paths decode_split splits on)
    let split = ctx.kernel_paths() == KernelPaths::Gpu;
    (params.split_len, params.batch_scratch) = (if split { DECODE_SPLIT_KEYS as u32 } else { 0 }, per_row as u32);
    let mut splits = 1;
    for (r, s) in seqs.iter().enumerate() {
        let what = format!("{op}: row {r}");
        check_decode_loops(ctx, &what, s.past, d)?;
        ensure(s.at.is_multiple_of(4), || format!("{what}: its caches start at float {}, not a multiple of 4", s.at))?;
        let s_splits = decode_split(ctx.kernel_paths(), s.past, d.window).1;
        ensure(decode_scratch_needs(d, s.past, s_splits) <= per_row, || format!("{what}: a scratch of {per_row} floats per row is too short for a token at {}", s.past))?;
        let cache_end = s.at + (s.past + 1) * d.nkv * d.hs;
        check_len(&what, "k_caches", k_caches, cache_end)?;
        check_len(&what, "v_caches", v_caches, cache_end)?;
        splits = splits.max(s_splits);
    }
    check_len(op, "table", table, 2 * seqs.len())?;
    check_len(op, "scores", scores, seqs.len() * per_row)?;
    check_decode_rows(op, q, out, Some(new), seqs.len(), d)?;
    launch_decode(ctx, d, &params, [q, new.0, new.1, table], [scores, out, k_caches, v_caches], [d.nh as u32, splits as u32, seqs.len() as u32], splits > 1)
}

/// The decode kernel's params for `d` (HS a multiple of 4), with the token's key and value
/// apart where `append`, and rope where given.
fn decode_params(op: &str, d: AttentionDims, append: bool, rope: Option<RopeDims>) -> Result<Params> {
    ensure(d.hs.is_multiple_of(4), || format!("{op}: head size {} must be a multiple of 4", d.hs))?;
    let mut params = d.check(op)?;
    params.append = append as u32;
    if let Some(r) = rope {
        ensure(r.head_size == d.hs, || format!("{op}: rope over heads of {}, attention over heads of {}", r.head_size, d.hs))?;
        params.set_rope(op, &r)?;
    }
    Ok(params)
}

/// A decoded token's keys per workgroup at position `past` (attention.wgsl's first_key for
/// the window) on these kernel paths, split on the GPU's past `DECODE_SPLIT_KEYS` (0: not
/// split), and the workgroups they take per head. attention.wgsl's batch_split_len splits
/// alike.
fn decode_split(paths: KernelPaths, past: usize, window: usize) -> (usize, usize) {
    let keys = if window == 0 || past < window { past + 1 } else { window };
    match paths {
        KernelPaths::Gpu if keys > DECODE_SPLIT_KEYS => {
            let len = keys.div_ceil(keys.div_ceil(DECODE_SPLIT_KEYS).min(DECODE_MAX_SPLITS));
            (len, keys.div_ceil(len))
        }
        _ => (0, 1),
    }
}

/// The scratch a token at `past` takes: its scores, and where its keys split in `splits`,
/// each part's maximum, sum and sums of values.
fn decode_scratch_needs(d: AttentionDims, past: usize, splits: usize) -> usize {
    d.nh * (past + 1) + if splits > 1 { d.nh * splits * (d.hs + 2) } else { 0 }
}

/// lavapipe returns wrong values from invocations that loop too long: a decoded token at
/// `past` that would is refused.
fn check_decode_loops(ctx: &GpuContext, op: &str, past: usize, d: AttentionDims) -> Result<()> {
    let (split_len, _) = decode_split(ctx.kernel_paths(), past, d.window);
    let keys = if split_len > 0 { split_len } else { past + 1 };
    let wg = DecodeWorkgroup::for_paths(ctx.kernel_paths());
    ensure(!ctx.is_llvmpipe() || wg.loops(keys, d.hs) < LLVMPIPE_LOOP_LIMIT, || {
        format!("{op}: a context of {} tokens would loop past lavapipe's limit of {LLVMPIPE_LOOP_LIMIT} iterations per invocation, where it returns wrong values", past + 1)
    })
}

/// The decode kernel's query, output and (where apart) new keys and values hold `rows` rows.
fn check_decode_rows(op: &str, q: &GpuBuffer, out: &GpuBuffer, new: Option<(&GpuBuffer, &GpuBuffer)>, rows: usize, d: AttentionDims) -> Result<()> {
    check_len(op, "q", q, rows * d.q_len())?;
    check_len(op, "out", out, rows * d.q_len())?;
    if let Some((k, v)) = new {
        check_len(op, "the token's key", k, rows * d.nkv * d.hs)?;
        check_len(op, "the token's value", v, rows * d.nkv * d.hs)?;
    }
    Ok(())
}

/// The decode kernel over `grid` (heads, splits, rows), and where keys split, the launch that
/// combines their parts. Bindings: q, the new key and value, the batch's table, then the
/// scratch, out and the two caches.
fn launch_decode(ctx: &GpuContext, d: AttentionDims, params: &Params, inputs: [&GpuBuffer; 4], [scores, out, k, v]: [&GpuBuffer; 4], grid: [u32; 3], combine: bool) -> Result<()> {
    let wg = DecodeWorkgroup::for_paths(ctx.kernel_paths());
    let shader = d.shader();
    ctx.dispatch(&Kernel::new(shader, "attention_decode", 29).with_variant(wg.variant), &inputs, &[scores, out, k, v], params, grid)?;
    if combine {
        ctx.dispatch(&Kernel::new(shader, "attention_decode_combine", 32), &[inputs[3]], &[scores, out], params, [grid[0], 1, grid[2]])?;
    }
    Ok(())
}

/// attention_decode's workgroup size (its DECODE_WG) on some kernel paths.
struct DecodeWorkgroup {
    size: usize,
    variant: Variant,
}

impl DecodeWorkgroup {
    fn for_paths(paths: KernelPaths) -> Self {
        match paths {
            KernelPaths::Gpu => DecodeWorkgroup { size: 256, variant: Variant::DEFAULT },
            KernelPaths::Llvmpipe | KernelPaths::Software => DecodeWorkgroup { size: 64, variant: Variant { name: "decode_wg64", constants: &[("DECODE_WG", 64.0)] } },
        }
    }

    /// The loop iterations of one invocation over `n` keys with heads of `hs`:
    /// its share of the scores (each a loop over the head), the shares' combining (twice over
    /// 8 of them, two loops each), its share of the values, the chunks' sum, and the staging
    /// and rotation of the query and key.
    fn loops(&self, n: usize, hs: usize) -> usize {
        let chunks = self.size / (hs / 4);
        n.div_ceil(self.size) * (hs / 4 + 1) + 4 * 8 + n.div_ceil(chunks) + chunks + 3 * hs.div_ceil(self.size)
    }
}
