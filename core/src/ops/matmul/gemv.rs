//! The matrix-vector kernels: a GPU's forward of 1 to 16 rows (decoding, a server's batch),
//! each weight read once for all of them, with an input norm, a gated activation and a
//! low-rank term where asked.

use super::{check_rows, Accumulate, ColumnBlocks, InputNorm, LowRankTerm, MatmulDims, MatmulKind, StridedParams};
use crate::error::ensure;
use crate::gpu::{Kernel, Shader, Variant};
use crate::ops::swiglu::Activation;
use crate::ops::{check_len, grid_rows};
use crate::{GpuBuffer, GpuContext, Result};

/// Rows of x up to which a GPU's forward runs as matrix-vector products (a decoded token, a
/// server's batch, a prompt's last few tokens): each weight read once for all of them.
pub const GEMV_ROWS: usize = 16;

/// The matrix-vector kernels' variant for `m` rows (pieces/gemv_rows.wgsl's GEMV_QUADS: the
/// rows in fours), ending in `act` where it is the gated kernel.
pub(crate) fn gemv_variant(m: usize, act: Option<Activation>) -> Variant {
    const PLAIN: [Variant; 4] = [
        Variant::DEFAULT,
        Variant { name: "8 rows", constants: &[("GEMV_QUADS", 2.0)] },
        Variant { name: "12 rows", constants: &[("GEMV_QUADS", 3.0)] },
        Variant { name: "16 rows", constants: &[("GEMV_QUADS", 4.0)] },
    ];
    const SILU: [Variant; 4] = [
        Variant { name: "silu", constants: &[("GATE_GELU", 0.0)] },
        Variant { name: "silu, 8 rows", constants: &[("GATE_GELU", 0.0), ("GEMV_QUADS", 2.0)] },
        Variant { name: "silu, 12 rows", constants: &[("GATE_GELU", 0.0), ("GEMV_QUADS", 3.0)] },
        Variant { name: "silu, 16 rows", constants: &[("GATE_GELU", 0.0), ("GEMV_QUADS", 4.0)] },
    ];
    const GELU: [Variant; 4] = [
        Variant { name: "gelu", constants: &[("GATE_GELU", 1.0)] },
        Variant { name: "gelu, 8 rows", constants: &[("GATE_GELU", 1.0), ("GEMV_QUADS", 2.0)] },
        Variant { name: "gelu, 12 rows", constants: &[("GATE_GELU", 1.0), ("GEMV_QUADS", 3.0)] },
        Variant { name: "gelu, 16 rows", constants: &[("GATE_GELU", 1.0), ("GEMV_QUADS", 4.0)] },
    ];
    let quads = m.clamp(1, GEMV_ROWS).div_ceil(4) - 1;
    match act {
        None => PLAIN[quads],
        Some(Activation::Silu) => SILU[quads],
        Some(Activation::GeluTanh) => GELU[quads],
    }
}

/// out(M, N) = act(inp·W_gateᵀ)·(inp·W_upᵀ) for 1 to 16 rows of inp (M, K), with `w` (2N, K)
/// holding W_gate's rows then W_up's (`Linear::upload_stacked`): a gated MLP's two
/// projections and its activation in one launch, for decoding on GPUs; with `norm`, of
/// inp's rows normed as they are read; with `term`, plus a low-rank term over the stacked
/// rows (LoRA's h·Bᵀ of gate and up: its `stacked` starts up's rows at N).
#[allow(clippy::too_many_arguments)]
pub fn matmul_gemv_gated(ctx: &GpuContext, act: Activation, out: &GpuBuffer, inp: &GpuBuffer, w: &GpuBuffer, d: MatmulDims, norm: Option<InputNorm>, term: Option<LowRankTerm>) -> Result<()> {
    let op = "matmul_gemv_gated";
    check_len(op, "w", w, 2 * d.n * d.k)?;
    let (shader, inputs, params) = gemv_launch(ctx, op, out, inp, w, d, 2 * d.n, norm, term)?;
    let kernel = Kernel::new(shader, op, 0).with_variant(gemv_variant(d.m, Some(act)));
    ctx.dispatch_counted(&kernel, &inputs, &[out], &params, grid_rows(d.n), 4.0 * (d.m * d.n * d.k) as f64)
}

/// out(M, N) = rmsnorm(inp)·Wᵀ (+ a forward's low-rank term) for 1 to 16 rows of inp (M, K)
/// and w (N, K): the norm and the projection after it in one matrix-vector launch, for
/// decoding on GPUs; out in column blocks where `d.c_blocks` says (stacked weights' parts
/// apart: q, k and v of a few tokens).
pub fn matmul_gemv_normed(ctx: &GpuContext, out: &GpuBuffer, inp: &GpuBuffer, w: &GpuBuffer, d: MatmulDims, norm: InputNorm, term: Option<LowRankTerm>) -> Result<()> {
    let op = "matmul_gemv_normed";
    check_len(op, "w", w, d.n * d.k)?;
    let (shader, inputs, params) = gemv_launch(ctx, op, out, inp, w, d, d.n, Some(norm), term)?;
    let kernel = Kernel::new(shader, "matmul_gemv", 0).with_variant(gemv_variant(d.m, None));
    ctx.dispatch_counted(&kernel, &inputs, &[out], &params, grid_rows(d.n), 2.0 * (d.m * d.n * d.k) as f64)
}

/// The checks, shader, inputs and params of a matrix-vector launch of `d` over `rows` rows
/// of w (the gated kernel's gate and up), with an input norm and a term as given: the normed
/// composition binds a term's operands (any buffers where there is none: its rank 0 never
/// reads them).
#[allow(clippy::too_many_arguments)]
fn gemv_launch<'a>(ctx: &GpuContext, op: &str, out: &GpuBuffer, inp: &'a GpuBuffer, w: &'a GpuBuffer, d: MatmulDims, rows: usize, norm: Option<InputNorm<'a>>, term: Option<LowRankTerm<'a>>) -> Result<(Shader, Vec<&'a GpuBuffer>, StridedParams)> {
    check_gemv(op, d, norm)?;
    check_len(op, "inp", inp, d.m * d.k)?;
    check_rows(op, "out", out, d.c_blocks, d.m, d.n)?;
    if let Some(t) = term {
        t.check(op, MatmulKind::Forward, d.m, rows)?;
    }
    let params = StridedParams { norm_eps: norm.map_or(0.0, |x| x.eps), c_blocks: ColumnBlocks::params(d.c_blocks), ..gemv_term_params(gemv_params(d, Accumulate::OVERWRITE), term) };
    let (h, v) = term.map_or((inp, inp), |t| (t.h, t.v));
    let (shader, inputs) = match (norm, term) {
        (Some(norm), _) => (Shader::MatmulTiledNormed, vec![inp, w, norm.weight, h, v]),
        (None, Some(_)) => (Shader::MatmulTiledLowRank, vec![inp, w, h, v]),
        (None, None) => (Shader::MatmulTiled, vec![inp, w]),
    };
    Ok((ctx.reduction_shader(shader), inputs, params))
}

/// The shapes the matrix-vector kernels take: the forward of 1 to GEMV_ROWS rows, and a norm weight
/// as long as a row.
fn check_gemv(op: &str, d: MatmulDims, norm: Option<InputNorm>) -> Result<()> {
    ensure(d.batch == 1 && (1..=GEMV_ROWS).contains(&d.m) && d.n > 0 && d.k > 0, || format!("{op}: the forward of 1 to {GEMV_ROWS} rows, got {d:?}"))?;
    match norm {
        Some(norm) => check_len(op, "norm weight", norm.weight, d.k),
        None => Ok(()),
    }
}

/// `params` with a forward's `term` (a matrix-vector kernel's: none of its dropout).
pub(super) fn gemv_term_params(params: StridedParams, term: Option<LowRankTerm>) -> StridedParams {
    let Some(t) = term else { return params };
    let (term_v_sj, term_v_sr) = t.v_strides(MatmulKind::Forward, 0);
    let [term_h_row, term_h_part, term_start1, term_start2, term_skip_at, term_skip] = t.gemv_layout();
    StridedParams { term_r: t.rank as u32, term_scale: t.scale, term_v_sj, term_v_sr, term_h_row, term_h_part, term_start1, term_start2, term_skip_at, term_skip, ..params }
}

/// The matrix-vector kernels' params for out(M, N) = beta·out + alpha·inp(M, K)·W(N, K)ᵀ.
pub(super) fn gemv_params(d: MatmulDims, acc: Accumulate) -> StridedParams {
    let (m, n, k) = (d.m as u32, d.n as u32, d.k as u32);
    StridedParams { m, n, r: k, alpha: acc.alpha, beta: acc.beta, a_si: k, a_sr: 1, b_sj: k, b_sr: 1, splits: 1, r_split: k, ..bytemuck::Zeroable::zeroed() }
}
