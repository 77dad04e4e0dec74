//! Residual add (its backward is the identity: the caller passes the same gradient on), and
//! the in-place `acc = beta·acc + x` that kernels writing `alpha·product` use to accumulate.

use super::{check_len, grid_1d};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    beta: f32,
    c: u32,
}

/// out = a + b over n values.
pub fn residual_forward(ctx: &GpuContext, out: &GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, n: usize) -> Result<()> {
    let op = "residual_forward";
    check_len(op, "a", a, n)?;
    check_len(op, "b", b, n)?;
    check_len(op, "out", out, n)?;
    ctx.dispatch(&Kernel::new(Shader::Residual, op, 0), &[a, b], &[out], &Params { n: n as u32, beta: 0.0, c: 0 }, grid_1d(n.div_ceil(4) as u64, 256))
}

/// acc = beta·acc + x over n values, in place.
pub fn residual_accumulate(ctx: &GpuContext, acc: &GpuBuffer, x: &GpuBuffer, beta: f32, n: usize) -> Result<()> {
    let op = "residual_accumulate";
    check_len(op, "x", x, n)?;
    check_len(op, "acc", acc, n)?;
    ctx.dispatch(&Kernel::new(Shader::Residual, op, 3), &[x], &[acc], &Params { n: n as u32, beta, c: 0 }, grid_1d(n.div_ceil(4) as u64, 256))
}

/// out(rows, C) += bias(C) on every row, in place.
pub fn bias_forward(ctx: &GpuContext, out: &GpuBuffer, bias: &GpuBuffer, rows: usize, c: usize) -> Result<()> {
    let op = "bias_forward";
    check_len(op, "bias", bias, c)?;
    check_len(op, "out", out, rows * c)?;
    let n = rows * c;
    ctx.dispatch(&Kernel::new(Shader::Residual, op, 5), &[bias], &[out], &Params { n: n as u32, beta: 0.0, c: c as u32 }, grid_1d(n as u64, 256))
}
