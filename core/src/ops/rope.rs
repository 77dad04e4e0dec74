//! Rotary position embedding (HF rotate_half) of one layer's queries (N tokens, H heads, HS)
//! and keys (N, HK, HS) in one launch: on the first `rotary` dims of each head, with Llama
//! 3's or LongRoPE's frequencies.

use super::{check_len, grid_1d};
use crate::error::ensure;
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    hk: u32,
    hs: u32,
    rot: u32,
    mscale: f32,
    /// Always 0 (rope.wgsl's `kept`).
    zero: u32,
}

/// The most frequencies LongRoPE's divisors cover (96 rotary dims: Phi-3.5-mini's heads of 96,
/// Phi-4-mini's 0.75 of 128).
pub const MAX_FREQS: usize = 48;

/// LongRoPE (Phi-3.5, Phi-4-mini): frequency i divided by `divisors[i]` (the short factors,
/// for contexts up to the original one), cos and sin multiplied by `mscale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LongRope {
    pub divisors: [f32; MAX_FREQS],
    pub mscale: f32,
}

/// Llama 3's rope scaling (HF rope_type "llama3"); `factor` 0 is none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position: f32,
}

/// Sizes of a rope call: N tokens with positions `pos` (N), `heads` query heads and
/// `kv_heads` key heads of HS, the first `rotary` dims of each rotated.
#[derive(Clone, Copy, Debug)]
pub struct RopeDims {
    pub n: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_size: usize,
    pub rotary: usize,
    pub theta: f32,
    pub scaling: RopeScaling,
    pub longrope: Option<LongRope>,
}

/// The rotary frequencies, `d.rotary / 2` of them, in f32 as HF computes them
/// (`_compute_default_rope_parameters`, `_compute_llama3_parameters`,
/// `_compute_longrope_parameters`): the angle pos·f is then the same f32 product as PyTorch's.
pub fn frequencies(d: &RopeDims) -> Vec<f32> {
    (0..d.rotary / 2)
        .map(|j| {
            let base = d.theta.powf((2 * j) as f32 / d.rotary as f32);
            match d.longrope {
                Some(l) => 1.0 / (l.divisors[j] * base),
                None => llama3(1.0 / base, &d.scaling),
            }
        })
        .collect()
}

/// Llama 3's scaling of frequency `f` (none where `s.factor` is 0): the low frequencies divided
/// by the factor, the middle band blended.
fn llama3(f: f32, s: &RopeScaling) -> f32 {
    if s.factor == 0.0 {
        return f;
    }
    let wavelen = 2.0 * std::f32::consts::PI / f;
    let (low_wavelen, high_wavelen) = (s.original_max_position / s.low_freq_factor, s.original_max_position / s.high_freq_factor);
    let scaled = if wavelen > low_wavelen { f / s.factor } else { f };
    if wavelen < high_wavelen || wavelen > low_wavelen {
        return scaled;
    }
    let smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    (1.0 - smooth) * scaled / s.factor + smooth * scaled
}

/// Whether `d` is a rotation the kernels make (an even head, an even number of rotary dims
/// up to it, LongRoPE's divisors for them): for `op`'s error.
pub(crate) fn check(op: &str, d: &RopeDims) -> Result<()> {
    ensure(d.head_size.is_multiple_of(2), || format!("{op}: head size {} must be even", d.head_size))?;
    ensure(d.rotary.is_multiple_of(2) && d.rotary <= d.head_size, || {
        format!("{op}: {} rotary dims of a head of {}: expected an even number up to the head size", d.rotary, d.head_size)
    })?;
    ensure(d.longrope.is_none() || d.rotary / 2 <= MAX_FREQS, || format!("{op}: LongRoPE over {} rotary dims; at most {}", d.rotary, 2 * MAX_FREQS))
}

/// Queries and keys (`q`, `k`) into `out` (q's, k's); in place where `out` is None.
fn launch(ctx: &GpuContext, op: &'static str, out: Option<(&GpuBuffer, &GpuBuffer)>, q: &GpuBuffer, k: &GpuBuffer, pos: &GpuBuffer, d: RopeDims) -> Result<()> {
    check(op, &d)?;
    let (q_len, k_len) = (d.n * d.heads * d.head_size, d.n * d.kv_heads * d.head_size);
    check_len(op, "q", q, q_len)?;
    check_len(op, "k", k, k_len)?;
    if let Some((q_out, k_out)) = out {
        check_len(op, "q out", q_out, q_len)?;
        check_len(op, "k out", k_out, k_len)?;
    }
    check_len(op, "pos", pos, d.n)?;
    let params = Params {
        n: d.n as u32,
        h: d.heads as u32,
        hk: d.kv_heads as u32,
        hs: d.head_size as u32,
        rot: d.rotary as u32,
        mscale: d.longrope.map_or(1.0, |l| l.mscale),
        zero: 0,
    };
    let grid = grid_1d(((q_len + k_len) / 2) as u64, 256);
    ctx.with_constant(&frequencies(&d), |freqs| match out {
        Some((q_out, k_out)) => ctx.dispatch(&Kernel::new(Shader::Rope, op, 0), &[pos, freqs, q, k], &[q_out, k_out], &params, grid),
        None => ctx.dispatch(&Kernel::new(Shader::RopeInPlace, op, 0), &[pos, freqs], &[q, k], &params, grid),
    })
}

/// `out` = (rope(q), rope(k)).
pub fn rope_forward(ctx: &GpuContext, out: (&GpuBuffer, &GpuBuffer), q: &GpuBuffer, k: &GpuBuffer, pos: &GpuBuffer, d: RopeDims) -> Result<()> {
    launch(ctx, "rope_forward", Some(out), q, k, pos, d)
}

/// (q, k) = (rope(q), rope(k)), where they lie.
pub fn rope_forward_in_place(ctx: &GpuContext, q: &GpuBuffer, k: &GpuBuffer, pos: &GpuBuffer, d: RopeDims) -> Result<()> {
    launch(ctx, "rope_forward_in_place", None, q, k, pos, d)
}

/// (dq, dk) from the rotated ones' gradients, where they lie: the transposed rotation.
pub fn rope_backward_in_place(ctx: &GpuContext, dq: &GpuBuffer, dk: &GpuBuffer, pos: &GpuBuffer, d: RopeDims) -> Result<()> {
    launch(ctx, "rope_backward_in_place", None, dq, dk, pos, d)
}
