//! One launcher module per op: each checks shapes, then records the WGSL entry points.
//! [`cpu`] holds the reference implementation of every op, in f64.

pub mod cpu;
pub mod matmul;

use crate::error::ensure;
use crate::{GpuBuffer, Result};

/// Checks that `buf` holds at least `n` f32 values; names the op and the tensor otherwise.
pub(crate) fn check_len(op: &str, name: &str, buf: &GpuBuffer, n: usize) -> Result<()> {
    ensure(buf.len_words() >= n, || {
        format!("{op}: {name} holds {} values, expected at least {n}", buf.len_words())
    })
}
