//! A frozen linear weight on the GPU, f32 or a block format; its kind picks the matmul kernel.

use crate::model::weights::{Matrix, MatrixData, WeightFormat};
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

    /// The format its weights are held in on the GPU.
    pub fn format(&self) -> WeightFormat {
        match self {
            Linear::F32 { .. } => WeightFormat::F32,
            Linear::Quant(q) => WeightFormat::Quant(q.format),
        }
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

    /// dinp(M, cols) = beta·dinp + dout(M, rows)·W: the input gradient through the frozen
    /// weight (a block format is dequantized on the fly, never as a whole).
    pub fn backward_input(&self, ctx: &GpuContext, dinp: &GpuBuffer, dout: &GpuBuffer, m: usize, beta: f32) -> Result<()> {
        let acc = Accumulate { alpha: 1.0, beta };
        match self {
            Linear::F32 { w, rows, cols } => matmul(ctx, MatmulKind::BackwardInput, dinp, dout, w, MatmulDims::new(m, *rows, *cols), acc),
            Linear::Quant(q) => matmul_quant(ctx, MatmulKind::BackwardInput, dinp, dout, q, m, acc),
        }
    }
}
