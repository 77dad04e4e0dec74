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

/// out[r] = the index of the largest of row r's `n` values in x (rows, n), the first where
/// several are (as `sampling::argmax`), as an f32: a token id as `embedding::token_ids` writes
/// them. Where values are NaN it is some index below `n`.
pub fn argmax(ctx: &GpuContext, out: &GpuBuffer, x: &GpuBuffer, rows: usize, n: usize) -> Result<()> {
    let op = "argmax";
    ensure(n > 0 && n < 1 << 24, || format!("{op}: {n} values, expected 1 to 2²⁴ (the index is written as an f32)"))?;
    ensure((1..=65_535).contains(&rows), || format!("{op}: {rows} rows, expected 1 to 65,535"))?;
    check_len(op, "x", x, rows * n)?;
    check_len(op, "out", out, rows)?;
    ctx.dispatch(&Kernel::new(Shader::Argmax, op, 0), &[x], &[out], &Params { n: n as u32 }, [rows as u32, 1, 1])
}
