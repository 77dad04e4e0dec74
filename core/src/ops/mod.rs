//! One launcher module per op: each checks shapes, then records the WGSL entry points.
//! [`cpu`] holds the reference implementation of every op, in f64.

pub mod adamw;
pub mod attention;
mod attention_flash;
mod attention_matmul;
pub mod block_copy;
pub mod cpu;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
pub mod fma_peak;
pub mod grad_norm;
pub mod lora;
pub mod matmul;
mod matmul_blocks;
pub mod matmul_quant;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
pub mod swiglu;

use crate::error::ensure;
use crate::{GpuBuffer, Result};

pub(crate) use crate::gpu::grid_1d;

/// Checks that `buf` holds at least `n` f32 values; names the op and the tensor otherwise.
pub(crate) fn check_len(op: &str, name: &str, buf: &GpuBuffer, n: usize) -> Result<()> {
    ensure(buf.len_words() >= n, || {
        format!("{op}: {name} holds {} values, expected at least {n}", buf.len_words())
    })
}

/// Workgroup counts for `rows` workgroups of one row each, folded into y past 65535.
pub(crate) fn grid_rows(rows: usize) -> [u32; 3] {
    grid_1d(rows as u64, 1)
}
