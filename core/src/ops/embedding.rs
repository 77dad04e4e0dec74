//! Token embedding lookup.

use super::{check_len, grid_1d};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    v: u32,
}

/// out(N, C) = wte(V, C)[tokens(N)]. Token ids must be < V (checked where they are made).
pub fn embedding_forward(ctx: &GpuContext, out: &GpuBuffer, tokens: &GpuBuffer, wte: &GpuBuffer, n: usize, c: usize, v: usize) -> Result<()> {
    let op = "embedding_forward";
    check_len(op, "tokens", tokens, n)?;
    check_len(op, "wte", wte, v * c)?;
    check_len(op, "out", out, n * c)?;
    let params = Params { n: n as u32, c: c as u32, v: v as u32 };
    ctx.dispatch(&Kernel::new(Shader::Embedding, op, 0), &[tokens, wte], &[out], &params, grid_1d((n * c) as u64, 256))
}
