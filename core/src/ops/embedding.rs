//! Token embedding lookup on the GPU, from the rows of a table it holds: a tied lm_head (its
//! f32 rows here; its quantized ones through `matmul_quant::embedding_gather`), or a part of
//! one.

use super::{check_len, grid_1d};
use crate::gpu::{Kernel, Shader};
use crate::{GpuBuffer, GpuContext, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    v: u32,
    first_row: u32,
    scale: f32,
}

/// Which rows of the embedding table a weight holds (from `first_row` on: a part of a split
/// lm_head), and the factor the embeddings take (Gemma's √C; 1 elsewhere).
#[derive(Clone, Copy, Debug)]
pub struct TableRows {
    pub first_row: usize,
    pub scale: f32,
}

/// Token ids as the lookups read them: f32 values (exact below 2²⁴), padded to a multiple of
/// 4 (the quantized gather reads them as vec4).
pub fn token_ids(tokens: &[u32]) -> Vec<f32> {
    let mut ids: Vec<f32> = tokens.iter().map(|&t| t as f32).collect();
    ids.resize(tokens.len().next_multiple_of(4), 0.0);
    ids
}

/// out(N, C) = scale·wte[id − first_row] for each of the N token ids in `ids` ([`token_ids`])
/// whose row wte (V, C) holds; the other rows of out are left as they are.
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(ctx: &GpuContext, out: &GpuBuffer, ids: &GpuBuffer, wte: &GpuBuffer, n: usize, c: usize, v: usize, rows: TableRows) -> Result<()> {
    let op = "embedding_forward";
    check_len(op, "ids", ids, n)?;
    check_len(op, "wte", wte, v * c)?;
    check_len(op, "out", out, n * c)?;
    let params = Params { n: n as u32, c: c as u32, v: v as u32, first_row: rows.first_row as u32, scale: rows.scale };
    ctx.dispatch(&Kernel::new(Shader::Embedding, op, 0), &[ids, wte], &[out], &params, grid_1d((n * c) as u64, 256))
}
