//! Matmul against a frozen quantized weight (N, K), dequantized inside the kernel:
//! forward y = x·Wᵀ and input gradient dx = dy·W. Frozen weights get no gradient.

use super::check_len;
use super::matmul::{Accumulate, MatmulKind};
use crate::error::ensure;
use crate::gpu::{Kernel, Shader};
use crate::quant::{QuantFormat, QuantTensor};
use crate::{Error, GpuBuffer, GpuContext, Result};

/// A quantized weight on the GPU: its blocks and, for NF4, the absmax codes and scales.
pub struct GpuQuantWeight {
    pub format: QuantFormat,
    pub rows: usize,
    pub cols: usize,
    q: GpuBuffer,
    nf4: Option<(GpuBuffer, GpuBuffer, f32)>,
}

impl GpuQuantWeight {
    pub fn upload(ctx: &GpuContext, t: &QuantTensor) -> Result<Self> {
        let nf4 = match &t.nf4 {
            Some(s) => {
                let codes: Vec<u8> = s.codes.iter().map(|&c| c as u8).collect();
                Some((ctx.upload_bytes(&codes)?, ctx.upload_f32(&s.scales)?, s.offset))
            }
            None => None,
        };
        Ok(GpuQuantWeight { format: t.format, rows: t.rows, cols: t.cols, q: ctx.upload_bytes(&t.q)?, nf4 })
    }

    /// Bytes this weight holds on the GPU.
    pub fn bytes(&self) -> u64 {
        self.q.len_bytes() + self.nf4.as_ref().map_or(0, |(c, s, _)| c.len_bytes() + s.len_bytes())
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
    beta: f32,
    aux: f32,
}

fn shader(format: QuantFormat) -> (Shader, &'static str, &'static str) {
    match format {
        QuantFormat::F16 => (Shader::MatmulF16, "matmul_f16_forward", "matmul_f16_backward_input"),
        QuantFormat::Q4_0 => (Shader::MatmulQ4_0, "matmul_q4_0_forward", "matmul_q4_0_backward_input"),
        QuantFormat::Q4_1 => (Shader::MatmulQ4_1, "matmul_q4_1_forward", "matmul_q4_1_backward_input"),
        QuantFormat::Q8_0 => (Shader::MatmulQ8_0, "matmul_q8_0_forward", "matmul_q8_0_backward_input"),
        QuantFormat::Nf4 => (Shader::MatmulNf4, "matmul_nf4_forward", "matmul_nf4_backward_input"),
    }
}

/// `Forward`: out(M, N) = inp(M, K)·Wᵀ. `BackwardInput`: out(M, K) = inp(M, N)·W, with
/// inp the upstream gradient. Combined with `out` as `acc` says.
pub fn matmul_quant(ctx: &GpuContext, kind: MatmulKind, out: &GpuBuffer, inp: &GpuBuffer, w: &GpuQuantWeight, m: usize, acc: Accumulate) -> Result<()> {
    let (sh, fwd, bwd) = shader(w.format);
    let (n, k) = (w.rows, w.cols);
    let (op, in_len, out_len, groups) = match kind {
        MatmulKind::Forward => (fwd, m * k, m * n, [n.div_ceil(32) as u32, m.div_ceil(32) as u32, 1]),
        MatmulKind::BackwardInput => (bwd, m * n, m * k, [(k / 8).div_ceil(8) as u32, m.div_ceil(32) as u32, 1]),
        MatmulKind::BackwardWeight => {
            return Err(Error::Shape("a frozen quantized weight has no weight gradient".into()))
        }
    };
    ensure(m > 0, || format!("{op}: no rows"))?;
    check_len(op, "inp", inp, in_len)?;
    check_len(op, "out", out, out_len)?;
    let params = Params { m: m as u32, n: n as u32, k: k as u32, alpha: acc.alpha, beta: acc.beta, aux: 0.0 };
    match &w.nf4 {
        Some((codes, scales, offset)) => {
            let params = Params { aux: *offset, ..params };
            ctx.dispatch(&Kernel::new(sh, op, 0), &[&w.q, codes, scales, inp], &[out], &params, groups)
        }
        None => ctx.dispatch(&Kernel::new(sh, op, 0), &[&w.q, inp], &[out], &params, groups),
    }
}
