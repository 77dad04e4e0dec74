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
    /// The backward's `dinp = beta·dinp + …`.
    beta: f32,
}

/// out (N, C) and rstd (N) from inp (N, C) and weight (C).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward(ctx: &GpuContext, out: &GpuBuffer, rstd: &GpuBuffer, inp: &GpuBuffer, weight: &GpuBuffer, n: usize, c: usize, eps: f32) -> Result<()> {
    let op = "rmsnorm_forward";
    check_len(op, "inp", inp, n * c)?;
    check_len(op, "weight", weight, c)?;
    check_len(op, "out", out, n * c)?;
    check_len(op, "rstd", rstd, n)?;
    let params = Params { n: n as u32, c: c as u32, eps, beta: 0.0 };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::Rmsnorm), op, 0), &[inp, weight], &[out, rstd], &params, grid_rows(n))
}

/// x + proj into `sum`, then its norm into `out` and `rstd`: a residual add and the norm
/// after it in one launch (the same values as residual_forward then rmsnorm_forward). With
/// `sum` None, x += proj in place.
#[allow(clippy::too_many_arguments)]
pub fn add_rmsnorm_forward(
    ctx: &GpuContext,
    sum: Option<&GpuBuffer>,
    out: &GpuBuffer,
    rstd: &GpuBuffer,
    x: &GpuBuffer,
    proj: &GpuBuffer,
    weight: &GpuBuffer,
    n: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    let op = "add_rmsnorm_forward";
    for (name, b, len) in [("x", x, n * c), ("proj", proj, n * c), ("weight", weight, c), ("out", out, n * c), ("rstd", rstd, n)] {
        check_len(op, name, b, len)?;
    }
    let params = Params { n: n as u32, c: c as u32, eps, beta: 0.0 };
    let shader = ctx.reduction_shader(Shader::Rmsnorm);
    match sum {
        Some(sum) => {
            check_len(op, "sum", sum, n * c)?;
            ctx.dispatch(&Kernel::new(shader, op, 13), &[x, proj, weight], &[sum, out, rstd], &params, grid_rows(n))
        }
        None => ctx.dispatch(&Kernel::new(shader, "add_rmsnorm_forward_in_place", 19), &[proj, weight], &[x, out, rstd], &params, grid_rows(n)),
    }
}

/// dinp (N, C) from dout, the forward's inp, weight and rstd.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(ctx: &GpuContext, dinp: &GpuBuffer, dout: &GpuBuffer, inp: &GpuBuffer, weight: &GpuBuffer, rstd: &GpuBuffer, n: usize, c: usize) -> Result<()> {
    backward(ctx, dinp, 0.0, dout, inp, weight, rstd, n, c)
}

/// [`rmsnorm_backward`] added to what dinp holds: a residual stream's gradient taking the
/// part that flows back through the norm.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward_add(ctx: &GpuContext, dinp: &GpuBuffer, dout: &GpuBuffer, inp: &GpuBuffer, weight: &GpuBuffer, rstd: &GpuBuffer, n: usize, c: usize) -> Result<()> {
    backward(ctx, dinp, 1.0, dout, inp, weight, rstd, n, c)
}

#[allow(clippy::too_many_arguments)]
fn backward(ctx: &GpuContext, dinp: &GpuBuffer, beta: f32, dout: &GpuBuffer, inp: &GpuBuffer, weight: &GpuBuffer, rstd: &GpuBuffer, n: usize, c: usize) -> Result<()> {
    let op = "rmsnorm_backward";
    for (name, b, len) in [("dout", dout, n * c), ("inp", inp, n * c), ("weight", weight, c), ("rstd", rstd, n), ("dinp", dinp, n * c)] {
        check_len(op, name, b, len)?;
    }
    let params = Params { n: n as u32, c: c as u32, eps: 0.0, beta };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::Rmsnorm), op, 4), &[dout, inp, weight, rstd], &[dinp], &params, grid_rows(n))
}

/// dweight (C) = Σ_rows dout·x·rstd (only needed when the norm weights are trained).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward_weight(ctx: &GpuContext, dweight: &GpuBuffer, dout: &GpuBuffer, inp: &GpuBuffer, rstd: &GpuBuffer, n: usize, c: usize) -> Result<()> {
    let op = "rmsnorm_backward_weight";
    for (name, b, len) in [("dout", dout, n * c), ("inp", inp, n * c), ("rstd", rstd, n), ("dweight", dweight, c)] {
        check_len(op, name, b, len)?;
    }
    let params = Params { n: n as u32, c: c as u32, eps: 0.0, beta: 0.0 };
    ctx.dispatch(&Kernel::new(ctx.reduction_shader(Shader::Rmsnorm), op, 9), &[dout, inp, rstd], &[dweight], &params, grid_1d(c as u64, 64))
}
