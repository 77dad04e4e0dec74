//! Dropout with a hashed mask: the same (seed, index) always drops the same value, so the
//! backward pass reapplies the op to the gradient instead of storing a mask.

use super::{check_len, grid_1d};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    seed_hash: u32,
    p: f32,
    beta: f32,
}

/// out = beta·out + inp·keep/(1 − p) over n values; keep = [`super::cpu::dropout_keep`].
pub fn dropout_forward(ctx: &GpuContext, out: &GpuBuffer, inp: &GpuBuffer, n: usize, p: f32, seed: u32, beta: f32) -> Result<()> {
    let op = "dropout_forward";
    crate::error::ensure((0.0..1.0).contains(&p), || format!("{op}: the dropout probability {p} is outside [0, 1)"))?;
    check_len(op, "inp", inp, n)?;
    check_len(op, "out", out, n)?;
    let params = Params { n: n as u32, seed_hash: super::cpu::lowbias32(seed), p, beta };
    ctx.dispatch(&Kernel::new(Shader::Dropout, op, 0), &[inp], &[out], &params, grid_1d(n.div_ceil(4) as u64, 256))
}
