//! The index of a vector's largest value on the GPU: greedy decoding's next token, picked
//! where the logits are (model/greedy.rs).

use super::check_len;
use crate::error::ensure;
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// out[0] = the index of the largest of x's first `n` values, the first where several are
/// (as `sampling::argmax`), as an f32: a token id as `embedding::token_ids` writes them.
/// Where values are NaN it is some index below `n`.
pub fn argmax(ctx: &GpuContext, out: &GpuBuffer, x: &GpuBuffer, n: usize) -> Result<()> {
    let op = "argmax";
    ensure(n > 0 && n < 1 << 24, || format!("{op}: {n} values, expected 1 to 2²⁴ (the index is written as an f32)"))?;
    check_len(op, "x", x, n)?;
    check_len(op, "out", out, 1)?;
    ctx.dispatch(&Kernel::new(Shader::Argmax, op, 0), &[x], &[out], &Params { n: n as u32 }, [1, 1, 1])
}
