//! RMSNorm (HF's LlamaRMSNorm): out = weight ⊙ x / sqrt(mean(x²) + eps), per row of C.

use super::{check_len, grid_1d, grid_rows};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    eps: f32,
}

/// out (N, C) and rstd (N) from inp (N, C) and weight (C).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward(ctx: &GpuContext, out: &GpuBuffer, rstd: &GpuBuffer, inp: &GpuBuffer, weight: &GpuBuffer, n: usize, c: usize, eps: f32) -> Result<()> {
    let op = "rmsnorm_forward";
    check_len(op, "inp", inp, n * c)?;
    check_len(op, "weight", weight, c)?;
    check_len(op, "out", out, n * c)?;
    check_len(op, "rstd", rstd, n)?;
    let params = Params { n: n as u32, c: c as u32, eps };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::Rmsnorm), op, 0), &[inp, weight], &[out, rstd], &params, grid_rows(n))
}

/// dinp (N, C) from dout, the forward's inp, weight and rstd.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(ctx: &GpuContext, dinp: &GpuBuffer, dout: &GpuBuffer, inp: &GpuBuffer, weight: &GpuBuffer, rstd: &GpuBuffer, n: usize, c: usize) -> Result<()> {
    let op = "rmsnorm_backward";
    for (name, b, len) in [("dout", dout, n * c), ("inp", inp, n * c), ("weight", weight, c), ("rstd", rstd, n), ("dinp", dinp, n * c)] {
        check_len(op, name, b, len)?;
    }
    let params = Params { n: n as u32, c: c as u32, eps: 0.0 };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::Rmsnorm), op, 4), &[dout, inp, weight, rstd], &[dinp], &params, grid_rows(n))
}

/// dweight (C) = Σ_rows dout·x·rstd (only needed when the norm weights are trained).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward_weight(ctx: &GpuContext, dweight: &GpuBuffer, dout: &GpuBuffer, inp: &GpuBuffer, rstd: &GpuBuffer, n: usize, c: usize) -> Result<()> {
    let op = "rmsnorm_backward_weight";
    for (name, b, len) in [("dout", dout, n * c), ("inp", inp, n * c), ("rstd", rstd, n), ("dweight", dweight, c)] {
        check_len(op, name, b, len)?;
    }
    let params = Params { n: n as u32, c: c as u32, eps: 0.0 };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::Rmsnorm), op, 9), &[dout, inp, rstd], &[dweight], &params, grid_1d(c as u64, 64))
}
