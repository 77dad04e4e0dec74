//! Matmul against a frozen quantized weight (N, K), dequantized inside the kernel:
//! forward y = x·Wᵀ and input gradient dx = dy·W. Frozen weights get no gradient.

use super::embedding::TableRows;
use super::{check_len, grid_1d, grid_rows};
pub use super::matmul_blocks::{QUANT_ROW_WG, QUANT_WG};
use super::matmul_blocks::*;
use super::swiglu::Activation;
use super::matmul::{check_rows, coop_tile, coop_variant, gemv_variant, overwrite_then_accumulate, tiled_variant, wide_tiles, GEMV_ROWS, reduction_split, split_choice, sum_splits_into_blocks, Accumulate, InputNorm, LowRankTerm, MatmulKind, ColumnBlocks};
use crate::error::ensure;
use crate::gpu::{Kernel, KernelPaths, Shader, Variant};
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

    /// A weight of `rows` × `cols` whose blocks `q` holds (not NF4, whose codes and scales are
    /// apart): one of several stacked in a buffer (`Linear::upload_stacked`), or all of them.
    pub fn on_buffer(format: QuantFormat, rows: usize, cols: usize, q: GpuBuffer) -> Self {
        debug_assert!(format != QuantFormat::Nf4, "NF4 weights hold their codes and scales apart");
        GpuQuantWeight { format, rows, cols, q, nf4: None }
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
    /// NF4: the absmax offset; unused by the other formats.
    aux: f32,
    /// out = beta·out + alpha·product: the tiled kernels only; the others overwrite.
    beta: f32,
    /// The tiled kernels' split reduction (ops::matmul::reduction_split).
    splits: u32,
    r_split: u32,
    /// The tiled kernels' low-rank term (matmul_<format>_low_rank.wgsl): its rank, scale,
    /// V's strides and its dropout's hashed seed and probability.
    term_r: u32,
    term_scale: f32,
    term_v_sj: u32,
    term_v_sr: u32,
    drop_seed: u32,
    drop_p: f32,
    /// The matrix-vector kernels' input norm (matmul_<format>_normed.wgsl): its eps.
    norm_eps: f32,
    /// The matrix-vector kernels' term over stacked weights (ops::matmul::StackedTerm).
    term_h_row: u32,
    term_h_part: u32,
    term_start1: u32,
    term_start2: u32,
    /// The tiled input gradient's inp and term's H in blocks along the reduction
    /// (ops::matmul::ColumnBlocks).
    a_blocks: [u32; 4],
    h_blocks: [u32; 4],
    /// ... and the tiled forward's out.
    c_blocks: [u32; 4],
    /// The gather's first row of the table (gather.wgsl).
    first_row: u32,
    /// The matrix-vector kernels' term over stacked weights: the rows of a part without one
    /// (ops::matmul::StackedTerm::skipped).
    term_skip_at: u32,
    term_skip: u32,
    /// The tiled kernels' f16 tiles: 1 where each row of inp and of the term's H is scaled by
    /// a power of two (pieces/row_scales.wgsl), as input gradients need.
    scale_rows: u32,
}

/// The entry points of a matmul_<format>.wgsl, named by core/build/ after its blocks.
pub struct QuantEntries {
    forward_large: &'static str,
    forward_small: &'static str,
    forward_row: &'static str,
    backward_input_large: &'static str,
    backward_input_small: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/matmul_quant_entries.rs"));

/// A format's shaders: matmul_<format>.wgsl with its entry points, its tiled kernels again
/// with a low-rank term, in f32 tiles and in f16 ones, its forward and input gradient on 16 × 16
/// and on 8 × 8 cooperative matrices, and its matrix-vector kernels with an input norm (none
/// for NF4, whose weights are never stacked).
struct FormatShaders {
    plain: Shader,
    low_rank: Shader,
    f16_tiles: Shader,
    coop: [Shader; 2],
    normed: Option<Shader>,
    entries: QuantEntries,
}

fn shaders(format: QuantFormat) -> FormatShaders {
    let (plain, low_rank, f16_tiles, coop, normed, entries) = match format {
        QuantFormat::F16 => (Shader::MatmulF16, Shader::MatmulF16LowRank, Shader::MatmulF16F16Tiles, [Shader::MatmulF16Coop, Shader::MatmulF16Coop8x8], Some(Shader::MatmulF16Normed), F16_ENTRIES),
        QuantFormat::Q4_0 => (Shader::MatmulQ4_0, Shader::MatmulQ4_0LowRank, Shader::MatmulQ4_0F16Tiles, [Shader::MatmulQ4_0Coop, Shader::MatmulQ4_0Coop8x8], Some(Shader::MatmulQ4_0Normed), Q4_0_ENTRIES),
        QuantFormat::Q4_1 => (Shader::MatmulQ4_1, Shader::MatmulQ4_1LowRank, Shader::MatmulQ4_1F16Tiles, [Shader::MatmulQ4_1Coop, Shader::MatmulQ4_1Coop8x8], Some(Shader::MatmulQ4_1Normed), Q4_1_ENTRIES),
        QuantFormat::Q8_0 => (Shader::MatmulQ8_0, Shader::MatmulQ8_0LowRank, Shader::MatmulQ8_0F16Tiles, [Shader::MatmulQ8_0Coop, Shader::MatmulQ8_0Coop8x8], Some(Shader::MatmulQ8_0Normed), Q8_0_ENTRIES),
        QuantFormat::Nf4 => (Shader::MatmulNf4, Shader::MatmulNf4LowRank, Shader::MatmulNf4F16Tiles, [Shader::MatmulNf4Coop, Shader::MatmulNf4Coop8x8], None, NF4_ENTRIES),
    };
    FormatShaders { plain, low_rank, f16_tiles, coop, normed, entries }
}

/// The blocks of outputs per invocation of the entry points: the generated large ones for
/// lavapipe and small ones for SwiftShader (and few rows), a row kernel for the forward of a
/// single row (decoding a token), and workgroup tiles for real GPUs (quant_tiled.wgsl).
/// Their sizes: core/src/ops/matmul_blocks.rs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantBlock {
    Large,
    Small,
    /// Forward only; K a multiple of 32.
    Row,
    /// 64 × 64 outputs per workgroup of 8 × 8 invocations (128 × 128 for large outputs),
    /// W decoded into workgroup memory.
    Tiled,
    /// [`QuantBlock::Tiled`] with inp and W rounded to f16 as they are staged (saturating at
    /// ±65504), the products summed in f32; shader-f16 only, where the context asks for f16
    /// matmuls (`GpuContext::with_f16_matmuls`). An input gradient's rows are scaled by powers
    /// of two first (pieces/row_scales.wgsl), so that its small values keep their digits.
    TiledF16,
    /// 64 × 64 outputs per workgroup on cooperative matrices (128 × 128 for large outputs;
    /// matmul/quant_coop.wgsl), inp and W rounded to f16 as they are staged (an input
    /// gradient's rows scaled) as in [`QuantBlock::TiledF16`]; where the device has them and
    /// the context asks for f16 matmuls.
    Coop,
    /// Forward only, 1 to 16 rows, K a multiple of 8: a workgroup per row of W (GPUs decoding).
    Gemv,
}

impl QuantBlock {
    /// Whether it is a kernel in workgroup tiles (quant_tiled.wgsl's in f32 or f16 tiles,
    /// quant_coop.wgsl's): those add a low-rank term and its dropout, split long reductions
    /// and read or write operands in column blocks.
    pub fn is_tiled(self) -> bool {
        matches!(self, QuantBlock::Tiled | QuantBlock::TiledF16 | QuantBlock::Coop)
    }

    /// Whether it rounds its inputs to f16 (and scales an input gradient's rows).
    fn rounds_to_f16(self) -> bool {
        matches!(self, QuantBlock::TiledF16 | QuantBlock::Coop)
    }

    pub fn for_adapter(ctx: &GpuContext) -> Self {
        match ctx.kernel_paths() {
            KernelPaths::Llvmpipe => QuantBlock::Large,
            KernelPaths::Software => QuantBlock::Small,
            KernelPaths::Gpu => QuantBlock::Tiled,
        }
    }

    /// (rows, cols) per invocation (the tiled kernels' grid is their tiles: [`tile_side`]).
    pub fn dims(self, kind: MatmulKind) -> (usize, usize) {
        match (self, kind) {
            (QuantBlock::Large, MatmulKind::Forward) => QUANT_FORWARD_LARGE,
            (QuantBlock::Large, _) => QUANT_BACKWARD_INPUT_LARGE,
            (QuantBlock::Small, MatmulKind::Forward) => QUANT_FORWARD_SMALL,
            (QuantBlock::Small, _) => QUANT_BACKWARD_INPUT_SMALL,
            (QuantBlock::Row, _) => QUANT_FORWARD_ROW,
            (QuantBlock::Tiled | QuantBlock::TiledF16 | QuantBlock::Coop, _) => (8, 8),
            (QuantBlock::Gemv, _) => (4, 1),
        }
    }
}

/// `Forward`: out(M, N) = inp(M, K)·Wᵀ. `BackwardInput`: out(M, K) = inp(M, N)·W, with
/// inp the upstream gradient. Combined with `out` as `acc` says.
pub fn matmul_quant(ctx: &GpuContext, kind: MatmulKind, out: &GpuBuffer, inp: &GpuBuffer, w: &GpuQuantWeight, m: usize, acc: Accumulate) -> Result<()> {
    let block = choose_block(ctx, kind, w, m);
    matmul_quant_with(ctx, block, kind, out, inp, w, m, acc, None)
}

/// [`matmul_quant`] plus a low-rank term (ops::matmul::matmul_low_rank): the tiled kernels add
/// it in their launch, as does the matrix-vector one (a term without dropout), the others
/// launch it after the product.
#[allow(clippy::too_many_arguments)]
pub fn matmul_quant_low_rank(ctx: &GpuContext, kind: MatmulKind, out: &GpuBuffer, inp: &GpuBuffer, w: &GpuQuantWeight, m: usize, acc: Accumulate, term: LowRankTerm) -> Result<()> {
    let block = choose_block(ctx, kind, w, m);
    matmul_quant_with(ctx, block, kind, out, inp, w, m, acc, Some(term))
}

/// out(M, N) = act(inp·W_gateᵀ)·(inp·W_upᵀ) for 1 to 16 rows of inp (M, K), with `w` (2N, K)
/// holding W_gate's rows then W_up's (`Linear::upload_stacked`): a gated MLP's two
/// projections and its activation in one launch, for decoding on GPUs; with `norm`, of
/// inp's rows normed as they are read; with `term`, plus a low-rank term over the stacked
/// rows (LoRA's h·Bᵀ of gate and up).
#[allow(clippy::too_many_arguments)]
pub fn matmul_quant_gemv_gated(ctx: &GpuContext, act: Activation, out: &GpuBuffer, inp: &GpuBuffer, w: &GpuQuantWeight, m: usize, norm: Option<InputNorm>, term: Option<LowRankTerm>) -> Result<()> {
    let op = "matmul_quant_gemv_gated";
    let n = w.rows / 2;
    ensure(w.rows.is_multiple_of(2) && n > 0, || format!("{op}: the weight holds {} rows, not gate's and up's", w.rows))?;
    let (shader, inputs, params) = gemv_launch(ctx, op, inp, out, None, w, m, n, norm, term)?;
    let kernel = Kernel::new(shader, op, 0).with_variant(gemv_variant(m, Some(act)));
    ctx.dispatch_counted(&kernel, &inputs, &[out], &params, grid_rows(n), 4.0 * (m * n * w.cols) as f64)
}

/// out(M, N) = rmsnorm(inp)·Wᵀ (+ a forward's low-rank term) for 1 to 16 rows of inp (M, K):
/// the norm and the projection after it in one matrix-vector launch, for decoding on GPUs
/// (not NF4); out in `blocks` where given (stacked weights' parts apart: q, k and v of a few
/// tokens).
#[allow(clippy::too_many_arguments)]
pub fn matmul_quant_gemv_normed(ctx: &GpuContext, out: &GpuBuffer, blocks: Option<ColumnBlocks>, inp: &GpuBuffer, w: &GpuQuantWeight, m: usize, norm: InputNorm, term: Option<LowRankTerm>) -> Result<()> {
    let op = "matmul_quant_gemv_normed";
    let (shader, inputs, params) = gemv_launch(ctx, op, inp, out, blocks, w, m, w.rows, Some(norm), term)?;
    let kernel = Kernel::new(shader, "matmul_quant_gemv", 0).with_variant(gemv_variant(m, None));
    ctx.dispatch_counted(&kernel, &inputs, &[out], &params, grid_rows(w.rows), 2.0 * (m * w.rows * w.cols) as f64)
}

/// The checks, shader, inputs and params of a matrix-vector launch over `m` rows of inp with
/// `n` outputs per row (in `blocks` where given), with an input norm (the format's `_normed`
/// composition, which binds a term's operands: any buffers where there is none, its rank 0
/// never reading them) and a term over the weight's rows as given.
#[allow(clippy::too_many_arguments)]
fn gemv_launch<'a>(ctx: &GpuContext, op: &str, inp: &'a GpuBuffer, out: &GpuBuffer, blocks: Option<ColumnBlocks>, w: &'a GpuQuantWeight, m: usize, n: usize, norm: Option<InputNorm<'a>>, term: Option<LowRankTerm<'a>>) -> Result<(Shader, Vec<&'a GpuBuffer>, Params)> {
    let k = w.cols;
    ensure((1..=GEMV_ROWS).contains(&m), || format!("{op}: the matrix-vector kernel takes 1 to {GEMV_ROWS} rows, got {m}"))?;
    ensure(k.is_multiple_of(8), || format!("{op}: K = {k} must be a multiple of 8"))?;
    check_len(op, "inp", inp, m * k)?;
    check_rows(op, "out", out, blocks, m, n)?;
    if let Some(t) = term {
        t.check(op, MatmulKind::Forward, m, w.rows)?;
    }
    let mut inputs = weight_and_input(w, inp);
    let (h, v) = term.map_or((inp, inp), |t| (t.h, t.v));
    let shader = match (norm, term) {
        (Some(norm), _) => {
            check_len(op, "norm weight", norm.weight, k)?;
            inputs.extend([norm.weight, h, v]);
            shaders(w.format).normed.ok_or_else(|| Error::Shape(format!("{op}: {:?} weights have no matrix-vector kernel with an input norm", w.format)))?
        }
        (None, Some(_)) => {
            inputs.extend([h, v]);
            shaders(w.format).low_rank
        }
        (None, None) => shaders(w.format).plain,
    };
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        alpha: 1.0,
        aux: w.nf4.as_ref().map_or(0.0, |nf4| nf4.2),
        splits: 1,
        norm_eps: norm.map_or(0.0, |x| x.eps),
        c_blocks: ColumnBlocks::params(blocks),
        ..bytemuck::Zeroable::zeroed()
    };
    Ok((ctx.reduction_shader(shader), inputs, term_params(params, term, MatmulKind::Forward, w.rows)))
}

/// `params` with a low-rank term's fields over `out_cols` outputs (kind's): its rank, scale,
/// V's strides, dropout and its layout over stacked weights; unchanged where there is none.
fn term_params(params: Params, term: Option<LowRankTerm>, kind: MatmulKind, out_cols: usize) -> Params {
    let Some(t) = term else { return params };
    let (term_v_sj, term_v_sr) = t.v_strides(kind, out_cols);
    let [term_h_row, term_h_part, term_start1, term_start2, term_skip_at, term_skip] = t.gemv_layout();
    Params {
        term_r: t.rank as u32,
        term_scale: t.scale,
        term_v_sj,
        term_v_sr,
        drop_seed: super::cpu::lowbias32(t.dropout.1),
        drop_p: t.dropout.0,
        term_h_row,
        term_h_part,
        term_start1,
        term_start2,
        term_skip_at,
        term_skip,
        h_blocks: t.block_params(),
        ..params
    }
}

/// W's buffers, then inp: every launch's first inputs.
/// out(N, K) = scale·W[id − first_row] for each of the N token ids in `ids`
/// (ops::embedding::token_ids) whose row W holds (a tied lm_head, or a part of it): token
/// embeddings decoded from the head's blocks on the GPU, one launch in every format. The
/// other rows of out are left as they are.
pub fn embedding_gather(ctx: &GpuContext, out: &GpuBuffer, ids: &GpuBuffer, w: &GpuQuantWeight, n: usize, rows: TableRows) -> Result<()> {
    let op = "embedding_gather";
    ensure(w.cols.is_multiple_of(8), || format!("{op}: rows of {} values; a multiple of 8 expected", w.cols))?;
    check_len(op, "ids", ids, n.next_multiple_of(4))?;
    check_len(op, "out", out, n * w.cols)?;
    let params = Params {
        m: n as u32,
        n: w.rows as u32,
        k: w.cols as u32,
        alpha: rows.scale,
        aux: w.nf4.as_ref().map_or(0.0, |nf4| nf4.2),
        first_row: rows.first_row as u32,
        ..bytemuck::Zeroable::zeroed()
    };
    let kernel = Kernel::new(shaders(w.format).plain, op, 0);
    ctx.dispatch(&kernel, &weight_and_input(w, ids), &[out], &params, grid_1d((n * w.cols / 8) as u64, 64))
}

fn weight_and_input<'a>(w: &'a GpuQuantWeight, inp: &'a GpuBuffer) -> Vec<&'a GpuBuffer> {
    let mut inputs: Vec<&GpuBuffer> = vec![&w.q];
    if let Some((codes, scales, _)) = &w.nf4 {
        inputs.extend([codes, scales]);
    }
    inputs.push(inp);
    inputs
}

/// The block `matmul_quant` runs for `m` rows on this adapter.
pub fn choose_block(ctx: &GpuContext, kind: MatmulKind, w: &GpuQuantWeight, m: usize) -> QuantBlock {
    // A few rows (decoding one token, or a server's batch) would leave most of a large
    // block idle: on lavapipe 8 rows of SmolLM2's M × 1536 × 576 (Q4_1) take 1.1 ms in
    // 4 × 4 blocks and 3.4 ms in its 32 × 24 ones; from 12 rows on neither wins clearly.
    let gpu = ctx.kernel_paths() == KernelPaths::Gpu;
    match m {
        ..=GEMV_ROWS if gpu && kind == MatmulKind::Forward && w.cols.is_multiple_of(8) => QuantBlock::Gemv,
        1 if kind == MatmulKind::Forward && w.cols.is_multiple_of(32) => QuantBlock::Row,
        ..=4 => QuantBlock::Small,
        ..=8 if !gpu => QuantBlock::Small,
        _ => match QuantBlock::for_adapter(ctx) {
            QuantBlock::Tiled if !w.cols.is_multiple_of(8) => QuantBlock::Small,
            QuantBlock::Tiled => tiled_block(ctx),
            block => block,
        },
    }
}

/// The tiled kernels here: where the context asks for f16 matmuls, on cooperative matrices
/// where the device has them, else in f16 tiles.
fn tiled_block(ctx: &GpuContext) -> QuantBlock {
    match ctx.f16_matmuls() {
        true if ctx.has_cooperative_matrix() => QuantBlock::Coop,
        true if ctx.has_f16() => QuantBlock::TiledF16,
        _ => QuantBlock::Tiled,
    }
}

/// The side of a tiled kernel's square tile of outputs for `outputs` of them.
fn tile_side(ctx: &GpuContext, block: QuantBlock, outputs: usize) -> usize {
    match block {
        QuantBlock::Coop => coop_tile(ctx, outputs),
        _ if wide_tiles(ctx, outputs) => 128,
        _ => 64,
    }
}

/// Whether the input gradient through `w` of `m` rows runs on the tiled kernel here, which
/// reads its input in blocks ([`matmul_quant_blocked_input`]).
pub fn takes_input_blocks(ctx: &GpuContext, w: &GpuQuantWeight, m: usize) -> bool {
    choose_block(ctx, MatmulKind::BackwardInput, w, m).is_tiled()
}

/// out(M, K) = beta·out + inp·W (+ a term) for weights stacked by rows (`Linear::upload_stacked`),
/// with inp (M, N), the parts' output gradients, in `blocks` along N where the backward wrote
/// them, and the term's H likewise where it is in blocks: one launch of the tiled kernel
/// (where [`takes_input_blocks`]) instead of one per part.
#[allow(clippy::too_many_arguments)]
pub fn matmul_quant_blocked_input(ctx: &GpuContext, out: &GpuBuffer, inp: &GpuBuffer, blocks: ColumnBlocks, w: &GpuQuantWeight, m: usize, beta: f32, term: Option<LowRankTerm>) -> Result<()> {
    let blocks = Blocks { inp: Some(blocks), out: None };
    quant_launch(ctx, tiled_block(ctx), MatmulKind::BackwardInput, out, inp, blocks, w, m, Accumulate { alpha: 1.0, beta }, term)
}

/// Whether the forward through `w` of `m` rows runs here on the tiled kernel, which writes out
/// in blocks ([`matmul_quant_blocked_output`]).
pub fn forward_takes_blocks(ctx: &GpuContext, w: &GpuQuantWeight, m: usize) -> bool {
    choose_block(ctx, MatmulKind::Forward, w, m).is_tiled()
}

/// out(M, N) = inp·Wᵀ (+ a term) for weights stacked by rows (`Linear::upload_stacked`), with
/// out in `blocks` (one per part, where the block wants each part's output) and the term in
/// blocks likewise (each part's LoRA: ops::matmul::TermLayout::Blocks): one launch of the
/// tiled kernel (where [`forward_takes_blocks`]) instead of one per part.
#[allow(clippy::too_many_arguments)]
pub fn matmul_quant_blocked_output(ctx: &GpuContext, out: &GpuBuffer, blocks: ColumnBlocks, inp: &GpuBuffer, w: &GpuQuantWeight, m: usize, term: Option<LowRankTerm>) -> Result<()> {
    let blocks = Blocks { inp: None, out: Some(blocks) };
    quant_launch(ctx, tiled_block(ctx), MatmulKind::Forward, out, inp, blocks, w, m, Accumulate::OVERWRITE, term)
}

/// Which operands of a tiled launch lie in column blocks.
#[derive(Clone, Copy, Default)]
struct Blocks {
    inp: Option<ColumnBlocks>,
    out: Option<ColumnBlocks>,
}

/// [`matmul_quant`] with the block size given (tests run both), and a low-rank term if any.
#[allow(clippy::too_many_arguments)]
pub fn matmul_quant_with(
    ctx: &GpuContext,
    block: QuantBlock,
    kind: MatmulKind,
    out: &GpuBuffer,
    inp: &GpuBuffer,
    w: &GpuQuantWeight,
    m: usize,
    acc: Accumulate,
    term: Option<LowRankTerm>,
) -> Result<()> {
    quant_launch(ctx, block, kind, out, inp, Blocks::default(), w, m, acc, term)
}

/// One product, inp or out in column blocks where `blocks` says so (the tiled input gradient's
/// inp, the tiled forward's out).
#[allow(clippy::too_many_arguments)]
fn quant_launch(
    ctx: &GpuContext,
    block: QuantBlock,
    kind: MatmulKind,
    out: &GpuBuffer,
    inp: &GpuBuffer,
    blocks: Blocks,
    w: &GpuQuantWeight,
    m: usize,
    acc: Accumulate,
    term: Option<LowRankTerm>,
) -> Result<()> {
    let tiled = block.is_tiled();
    // the tiled kernels add a term (and its dropout) in their launch, the matrix-vector one a
    // term without dropout (a forward's h·Bᵀ)
    let takes_term = |t: &LowRankTerm| tiled || (block == QuantBlock::Gemv && t.dropout.0 == 0.0);
    ensure(blocks.inp.is_none() || (tiled && kind == MatmulKind::BackwardInput), || format!("inp in blocks is for the tiled input gradient, not {kind:?} on {block:?}"))?;
    ensure(blocks.out.is_none() || (tiled && kind == MatmulKind::Forward), || format!("out in blocks is for the tiled forward, not {kind:?} on {block:?}"))?;
    ensure(term.is_none_or(|t| t.layout_fits(tiled, block == QuantBlock::Gemv)), || format!("the {block:?} kernels cannot read a term laid out as {:?}", term.map(|t| t.layout)))?;
    if let Some(t) = term.filter(|t| !takes_term(t)) {
        matmul_quant_with(ctx, block, kind, out, inp, w, m, acc, None)?;
        let width = if kind == MatmulKind::Forward { w.rows } else { w.cols };
        return t.add_alone(ctx, kind, out, m, width, acc.alpha);
    }
    let shaders = shaders(w.format);
    let entries = &shaders.entries;
    let sh = match (block, term) {
        (QuantBlock::TiledF16, _) => shaders.f16_tiles,
        (QuantBlock::Coop, _) => {
            let shape = ctx.coop_shape_for("quantized matmuls on cooperative matrices")?;
            shaders.coop[usize::from(shape.side != 16)]
        }
        (QuantBlock::Gemv, Some(_)) => ctx.reduction_shader(shaders.low_rank),
        (QuantBlock::Gemv, None) => ctx.reduction_shader(shaders.plain),
        (_, Some(_)) => shaders.low_rank,
        (_, None) => shaders.plain,
    };
    let (n, k) = (w.rows, w.cols);
    let (tm, tn) = block.dims(kind);
    let (in_len, out_len, out_cols) = match kind {
        MatmulKind::Forward => (m * k, m * n, n),
        MatmulKind::BackwardInput => (m * n, m * k, k),
        MatmulKind::BackwardWeight => {
            return Err(Error::Shape("a frozen quantized weight has no weight gradient".into()))
        }
    };
    let op = match (kind, block) {
        (MatmulKind::Forward, QuantBlock::Large) => entries.forward_large,
        (MatmulKind::Forward, QuantBlock::Small) => entries.forward_small,
        (MatmulKind::Forward, QuantBlock::Row) => entries.forward_row,
        (_, QuantBlock::Large) => entries.backward_input_large,
        (_, QuantBlock::Small) => entries.backward_input_small,
        (_, QuantBlock::Row) => return Err(Error::Shape("the row kernel computes forwards only".into())),
        (MatmulKind::Forward, QuantBlock::Tiled | QuantBlock::TiledF16) => "matmul_quant_forward_tiled",
        (_, QuantBlock::Tiled | QuantBlock::TiledF16) => "matmul_quant_backward_input_tiled",
        (MatmulKind::Forward, QuantBlock::Coop) => "matmul_quant_forward_coop",
        (_, QuantBlock::Coop) => "matmul_quant_backward_input_coop",
        (MatmulKind::Forward, QuantBlock::Gemv) => "matmul_quant_gemv",
        (_, QuantBlock::Gemv) => return Err(Error::Shape("the matrix-vector kernel computes forwards only".into())),
    };
    let side = tile_side(ctx, block, m * out_cols);
    let groups = match block {
        QuantBlock::Row => [out_cols.div_ceil(tn * QUANT_ROW_WG) as u32, m as u32, 1],
        _ if tiled => [out_cols.div_ceil(side) as u32, m.div_ceil(side) as u32, 1],
        QuantBlock::Gemv => grid_rows(n),
        _ => [out_cols.div_ceil(tn * QUANT_WG.0) as u32, m.div_ceil(tm * QUANT_WG.1) as u32, 1],
    };
    let variant = match block {
        // (the context has cooperative matrices only in a shape with a variant)
        QuantBlock::Coop => ctx.coop_shape().and_then(|s| coop_variant(s, side, false)).expect("a variant for the context's cooperative matrices"),
        _ if tiled => tiled_variant(ctx, (side, side), true),
        QuantBlock::Gemv => gemv_variant(m, None),
        _ => Variant::DEFAULT,
    };
    ensure(block != QuantBlock::TiledF16 || ctx.has_f16(), || format!("{op}: the f16 tiles need an adapter with shader-f16"))?;
    ensure(!(tiled || block == QuantBlock::Gemv) || k.is_multiple_of(8), || format!("{op}: K = {k} must be a multiple of 8"))?;
    ensure(block != QuantBlock::Gemv || m <= GEMV_ROWS, || format!("{op}: the matrix-vector kernel takes 1 to {GEMV_ROWS} rows, got {m}"))?;
    ensure(block != QuantBlock::Row || k.is_multiple_of(32), || format!("{op}: K = {k} must be a multiple of 32"))?;
    ensure(kind != MatmulKind::BackwardInput || n % 4 == 0, || {
        format!("{op}: the weight's rows (N = {n}) must be a multiple of 4 for the input gradient")
    })?;
    ensure(m > 0, || format!("{op}: no rows"))?;
    match blocks.inp {
        Some(b) => b.check(op, "inp", inp, m, n)?,
        None => check_len(op, "inp", inp, in_len)?,
    }
    check_rows(op, "out", out, blocks.out, m, out_cols)?;
    if let Some(t) = term {
        t.check(op, kind, m, out_cols)?;
        t.check_out_blocks(op, kind, blocks.out)?;
    }
    // The tiled kernels split long reductions (ops::matmul::reduction_split) into parts that
    // matmul_sum_splits adds up; every other kernel runs whole.
    let (splits, r_split) = if tiled {
        let tiles = out_cols.div_ceil(side) * m.div_ceil(side);
        reduction_split(op, tiles, split_choice(ctx), if kind == MatmulKind::Forward { k } else { n }, 1, true, m * out_cols)?
    } else {
        (1, 0)
    };
    let accumulates = (tiled || block == QuantBlock::Gemv) && splits == 1;
    let params = Params {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        alpha: if splits > 1 { 1.0 } else { acc.alpha },
        aux: w.nf4.as_ref().map_or(0.0, |nf4| nf4.2),
        beta: if accumulates { acc.beta } else { 0.0 },
        splits: splits as u32,
        r_split: r_split as u32,
        a_blocks: ColumnBlocks::params(blocks.inp),
        c_blocks: ColumnBlocks::params(blocks.out),
        scale_rows: (block.rounds_to_f16() && kind == MatmulKind::BackwardInput) as u32,
        ..bytemuck::Zeroable::zeroed()
    };
    let params = term_params(params, term, kind, out_cols);
    let groups = [groups[0], groups[1], splits as u32];
    let flops = 2.0 * (m * n * k + m * out_cols * term.map_or(0, |t| t.rank)) as f64;
    let kernel = Kernel::new(sh, op, 0).with_variant(variant);
    let mut inputs = weight_and_input(w, inp);
    match term {
        Some(t) => inputs.extend([t.h, t.v]),
        // the f16 tiles' and cooperative matrices' only composition binds a term: a rank of 0
        // never reads these
        None if block.rounds_to_f16() => inputs.extend([inp, inp]),
        None => {}
    }
    let launch = |dest: &GpuBuffer| ctx.dispatch_counted(&kernel, &inputs, &[dest], &params, groups, flops);
    if splits > 1 {
        let parts = ctx.alloc_scratch_f32(splits * out_len)?;
        launch(&parts)?;
        return sum_splits_into_blocks(ctx, out, blocks.out, &parts, m, out_cols, splits, acc);
    }
    // The generated kernels only overwrite (see shaders/matmul/quant.wgsl's `st1`); the tiled
    // and matrix-vector ones accumulate themselves.
    overwrite_then_accumulate(ctx, out, out_len, if accumulates { 0.0 } else { acc.beta }, launch)
}

