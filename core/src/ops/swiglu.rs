//! SwiGLU: out = silu(gate)·up.

use super::{check_len, grid_1d};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

pub fn swiglu_forward(ctx: &GpuContext, out: &GpuBuffer, gate: &GpuBuffer, up: &GpuBuffer, n: usize) -> Result<()> {
    let op = "swiglu_forward";
    for (name, b) in [("gate", gate), ("up", up), ("out", out)] {
        check_len(op, name, b, n)?;
    }
    ctx.dispatch(&Kernel::new(Shader::Swiglu, op, 0), &[gate, up], &[out], &Params { n: n as u32 }, grid_1d(n as u64, 256))
}

pub fn swiglu_backward(ctx: &GpuContext, dgate: &GpuBuffer, dup: &GpuBuffer, dout: &GpuBuffer, gate: &GpuBuffer, up: &GpuBuffer, n: usize) -> Result<()> {
    let op = "swiglu_backward";
    for (name, b) in [("dout", dout), ("gate", gate), ("up", up), ("dgate", dgate), ("dup", dup)] {
        check_len(op, name, b, n)?;
    }
    ctx.dispatch(&Kernel::new(Shader::Swiglu, op, 3), &[dout, gate, up], &[dgate, dup], &Params { n: n as u32 }, grid_1d(n as u64, 256))
}
