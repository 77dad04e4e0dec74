//! Rotary position embedding (HF rotate_half), over (N tokens, H heads, HS).

use super::{check_len, grid_1d};
use crate::error::ensure;
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    hs: u32,
    theta: f32,
    scaling: RopeScaling,
}

/// Llama 3's rope scaling (HF rope_type "llama3"); `factor` 0 is none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position: f32,
}

/// Sizes of a rope call: N tokens with positions `pos` (N), H heads of HS.
#[derive(Clone, Copy, Debug)]
pub struct RopeDims {
    pub n: usize,
    pub heads: usize,
    pub head_size: usize,
    pub theta: f32,
    pub scaling: RopeScaling,
}

fn launch(ctx: &GpuContext, op: &'static str, out: &GpuBuffer, inp: &GpuBuffer, pos: &GpuBuffer, d: RopeDims) -> Result<()> {
    ensure(d.head_size.is_multiple_of(2), || format!("{op}: head size {} must be even", d.head_size))?;
    let len = d.n * d.heads * d.head_size;
    check_len(op, "inp", inp, len)?;
    check_len(op, "out", out, len)?;
    check_len(op, "pos", pos, d.n)?;
    let params = Params { n: d.n as u32, h: d.heads as u32, hs: d.head_size as u32, theta: d.theta, scaling: d.scaling };
    ctx.dispatch(&Kernel::new(Shader::Rope, op, 0), &[inp, pos], &[out], &params, grid_1d((len / 2) as u64, 256))
}

pub fn rope_forward(ctx: &GpuContext, out: &GpuBuffer, inp: &GpuBuffer, pos: &GpuBuffer, d: RopeDims) -> Result<()> {
    launch(ctx, "rope_forward", out, inp, pos, d)
}

/// dinp from dout: the transposed rotation.
pub fn rope_backward(ctx: &GpuContext, dinp: &GpuBuffer, dout: &GpuBuffer, pos: &GpuBuffer, d: RopeDims) -> Result<()> {
    launch(ctx, "rope_backward", dinp, dout, pos, d)
}
