//! A frozen linear weight on the GPU, f32 or a block format; its kind picks the matmul kernel.

use crate::model::weights::{Matrix, MatrixData, WeightFormat};
use crate::ops::matmul::{matmul, matmul_low_rank, Accumulate, LowRankTerm, MatmulDims, MatmulKind};
use crate::ops::matmul_quant::{matmul_quant, matmul_quant_low_rank, GpuQuantWeight};
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

    /// out(M, rows) = inp(M, cols)·Wᵀ (+ a low-rank term: LoRA's scale·h·Bᵀ).
    pub fn forward(&self, ctx: &GpuContext, out: &GpuBuffer, inp: &GpuBuffer, m: usize, term: Option<LowRankTerm>) -> Result<()> {
        self.product(ctx, MatmulKind::Forward, out, inp, m, Accumulate::OVERWRITE, term)
    }

    /// dinp(M, cols) = beta·dinp + dout(M, rows)·W (+ a low-rank term: LoRA's dh·A): the input
    /// gradient through the frozen weight (a block format is dequantized on the fly, never as
    /// a whole).
    pub fn backward_input(&self, ctx: &GpuContext, dinp: &GpuBuffer, dout: &GpuBuffer, m: usize, beta: f32, term: Option<LowRankTerm>) -> Result<()> {
        self.product(ctx, MatmulKind::BackwardInput, dinp, dout, m, Accumulate { alpha: 1.0, beta }, term)
    }

    /// The tiled kernels add the term in the product's launch, the others after it.
    #[allow(clippy::too_many_arguments)]
    fn product(&self, ctx: &GpuContext, kind: MatmulKind, out: &GpuBuffer, a: &GpuBuffer, m: usize, acc: Accumulate, term: Option<LowRankTerm>) -> Result<()> {
        match (self, term) {
            (Linear::F32 { w, rows, cols }, None) => matmul(ctx, kind, out, a, w, MatmulDims::new(m, *rows, *cols), acc),
            (Linear::F32 { w, rows, cols }, Some(t)) => matmul_low_rank(ctx, kind, out, a, w, MatmulDims::new(m, *rows, *cols), acc, t),
            (Linear::Quant(q), None) => matmul_quant(ctx, kind, out, a, q, m, acc),
            (Linear::Quant(q), Some(t)) => matmul_quant_low_rank(ctx, kind, out, a, q, m, acc, t),
        }
    }
}
