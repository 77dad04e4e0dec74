//! A frozen linear weight on the GPU, f32 or a block format; its kind picks the matmul kernel.

use crate::model::weights::{Matrix, MatrixData};
use crate::ops::matmul::{matmul, Accumulate, MatmulDims, MatmulKind};
use crate::ops::matmul_quant::{matmul_quant, GpuQuantWeight};
use crate::{GpuBuffer, GpuContext, Result};

pub enum Linear {
    F32 { w: GpuBuffer, rows: usize, cols: usize },
    Quant(GpuQuantWeight),
}

impl Linear {
    pub fn upload(ctx: &GpuContext, m: &Matrix) -> Result<Self> {
        Ok(match &m.data {
            MatrixData::F32(v) => Linear::F32 { w: ctx.upload_f32(v)?, rows: m.rows, cols: m.cols },
            MatrixData::Quant(q) => Linear::Quant(GpuQuantWeight::upload(ctx, q)?),
        })
    }

    /// (rows, cols) = (out features, in features).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Linear::F32 { rows, cols, .. } => (*rows, *cols),
            Linear::Quant(q) => (q.rows, q.cols),
        }
    }

    /// out(M, rows) = inp(M, cols)·Wᵀ.
    pub fn forward(&self, ctx: &GpuContext, out: &GpuBuffer, inp: &GpuBuffer, m: usize) -> Result<()> {
        match self {
            Linear::F32 { w, rows, cols } => {
                matmul(ctx, MatmulKind::Forward, out, inp, w, MatmulDims::new(m, *rows, *cols), Accumulate::OVERWRITE)
            }
            Linear::Quant(q) => matmul_quant(ctx, MatmulKind::Forward, out, inp, q, m, Accumulate::OVERWRITE),
        }
    }
}
