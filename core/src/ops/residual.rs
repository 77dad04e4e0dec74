//! Residual add. Its backward is the identity: the caller passes the same gradient on.

use super::{check_len, grid_1d};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// out = a + b over n values.
pub fn residual_forward(ctx: &GpuContext, out: &GpuBuffer, a: &GpuBuffer, b: &GpuBuffer, n: usize) -> Result<()> {
    let op = "residual_forward";
    check_len(op, "a", a, n)?;
    check_len(op, "b", b, n)?;
    check_len(op, "out", out, n)?;
    ctx.dispatch(&Kernel::new(Shader::Residual, op, 0), &[a, b], &[out], &Params { n: n as u32 }, grid_1d(n as u64, 256))
}
