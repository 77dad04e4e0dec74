//! A block of a row-major matrix copied into a block of another of a different width, in one
//! launch (the split lm_head's parts of a logits row).

use super::{check_len, grid_1d};
use crate::error::ensure;
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    src_stride: u32,
    src_col: u32,
    dst_stride: u32,
    dst_col: u32,
}

/// Columns `col..col + cols` of a row-major matrix `stride` values wide.
#[derive(Clone, Copy, Debug)]
pub struct Columns {
    pub stride: usize,
    pub col: usize,
}

/// dst[r, dst.col + c] = src[r, src.col + c] for r < rows, c < cols.
pub fn block_copy(ctx: &GpuContext, dst: &GpuBuffer, dst_at: Columns, src: &GpuBuffer, src_at: Columns, rows: usize, cols: usize) -> Result<()> {
    let op = "block_copy";
    for (name, at) in [("src", src_at), ("dst", dst_at)] {
        ensure(at.col + cols <= at.stride, || format!("{op}: {name} columns {}..{} pass its width {}", at.col, at.col + cols, at.stride))?;
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    check_len(op, "src", src, (rows - 1) * src_at.stride + src_at.col + cols)?;
    check_len(op, "dst", dst, (rows - 1) * dst_at.stride + dst_at.col + cols)?;
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        src_stride: src_at.stride as u32,
        src_col: src_at.col as u32,
        dst_stride: dst_at.stride as u32,
        dst_col: dst_at.col as u32,
    };
    ctx.dispatch(&Kernel::new(Shader::BlockCopy, op, 0), &[src], &[dst], &p, grid_1d((rows * cols) as u64, 256))
}
