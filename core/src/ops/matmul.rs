//! f32 matmul in the nn.Linear layout and the two products its backward needs.
//!
//! Software adapters get the register-blocked kernels of matmul.wgsl when the vec4 rule
//! holds; everything else runs the workgroup-tiled strided kernel of matmul_tiled.wgsl, in
//! 64 × 64 tiles, or 128 × 128 where the output has enough of them to fill a large GPU.
//! Where a context asks for f16 matmuls, forwards and input gradients run matmul_coop.wgsl
//! instead where its device has cooperative matrices (the same strided GEMM on tensor cores),
//! else the tiled kernel with its tiles in f16 where it has shader-f16; an input gradient's
//! rows are scaled by powers of two as they are staged (shaders/pieces/row_scales.wgsl). The
//! tiled kernels can also add a low-rank product in the same launch ([`matmul_low_rank`]:
//! LoRA's), and leave a weight gradient's split parts for a later sum over many gradients
//! ([`matmul_weight_parts`]).
//!
//! This file holds the sizes, the launch and its checks; beside it: `tiling` (which kernel and
//! tile a product takes), `split` (how a launch splits its reduction), `parts` (split parts'
//! sums, and parts laid out by the caller), `low_rank` (LoRA's term in the base launch),
//! `gemv` (decoding's matrix-vector kernels) and `probe` (bench-only probes).

use super::{check_len, grid_rows};
use super::dropout::dropout_forward;
use super::residual::residual_accumulate;
use crate::error::ensure;
use crate::gpu::{Kernel, Shader, Variant};
use crate::{GpuBuffer, GpuContext, Result};

mod gemv;
mod low_rank;
mod parts;
mod probe;
mod split;
mod tiling;
pub use gemv::{matmul_gemv_gated, matmul_gemv_normed, GEMV_ROWS};
pub(crate) use gemv::gemv_variant;
use gemv::{gemv_params, gemv_term_params};
pub use low_rank::{matmul_low_rank, matmul_low_rank_with, LowRankTerm, StackedTerm, TermLayout};
pub use parts::{matmul_shared_input, matmul_weight_parts, weight_grad_parts, weight_grad_splits, SplitParts};
pub(crate) use parts::{sum_splits, sum_splits_into_blocks};
use parts::{sum_splits_dropping, SplitSum};
pub use probe::{matmul_coop_probe, matmul_tiled_probe, TileProbe};
pub use split::{forward_splits, split_choice_for, valid_split_min_steps, SPLIT_MIN_STEPS, SPLIT_WORKGROUPS};
pub(crate) use split::{reduction_split, split_choice, BATCHED_MAX_REDUCTION};
pub use tiling::{choose_f32_tiling, choose_tiling, coop_tile, f32_tile, forward_takes_blocks, tiled_for, wide_tile_bytes, wide_tiles, MatmulTiling, LONG_REDUCTION, THIN_COLUMNS, WIDE_16_STEPS_BYTES, WIDE_OUTPUTS};
pub(crate) use tiling::{coop_variant, tiled_shape, tiled_variant};

/// Sizes of one matmul call; `batch` matrices of a and c, b shared unless `b_batched`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub b_batched: bool,
    /// One a for the whole batch (with b batched: one input by several weights; the tiled
    /// kernels only).
    pub a_shared: bool,
    /// a in blocks along its columns (the tiled kernels only, one product): an input
    /// gradient's (the output gradient; its columns the reduction), a stacked weight's from its
    /// parts' gradients; or a weight gradient's (its columns the gradient's rows), LoRA's dA of
    /// the targets that share an input from each one's dh.
    pub a_blocks: Option<ColumnBlocks>,
    /// A forward's output in blocks along its columns (the tiled kernels only, one matrix): a
    /// stacked weight's, into its parts' outputs.
    pub c_blocks: Option<ColumnBlocks>,
    /// Where a batch's operands lie apart (the tiled kernels only): parts of arenas, as LoRA's
    /// gradients of several targets at once read and write them. None: each operand's items
    /// back to back.
    pub batch_strides: Option<BatchStrides>,
}

/// Floats from one batch item's a, b and output to the next's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStrides {
    pub a: usize,
    pub b: usize,
    pub c: usize,
}

impl MatmulDims {
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        MatmulDims { batch: 1, m, n, k, b_batched: false, a_shared: false, a_blocks: None, c_blocks: None, batch_strides: None }
    }

    /// Whether the register-blocked kernels can take these sizes: all three products read N
    /// and K as vec4.
    pub fn register_fits(&self) -> bool {
        self.k.is_multiple_of(4) && self.n.is_multiple_of(4)
    }
}

/// An operand of the tiled kernels whose columns lie in two or three blocks, each a row-major
/// matrix of its own width stored apart in the bound buffer
/// (shaders/pieces/column_blocks.wgsl). Weights stacked by rows (q, k and v; gate and up)
/// take one launch for all their parts instead of one each: the input gradient reads the
/// parts' output gradients, and LoRA's dh of each, where the backward wrote them (blocks
/// along the reduction); the forward writes each part's output where the block wants it, each
/// with its own LoRA term (blocks of the output, and of the term's x·Aᵀ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnBlocks {
    /// (offset in floats from the bound buffer's start, width) of each block, in column
    /// order; the first at offset 0. Unused entries are (0, 0).
    blocks: [(usize, usize); 3],
}

impl ColumnBlocks {
    /// From each block's (offset in floats, width): two or three, the first at offset 0, none
    /// empty but the second of three (a stacked forward's term: a part without one).
    pub fn new(blocks: &[(usize, usize)]) -> Result<Self> {
        let empty_allowed = |i: usize| i == 1 && blocks.len() == 3;
        ensure((2..=3).contains(&blocks.len()) && blocks[0].0 == 0 && blocks.iter().enumerate().all(|(i, &(_, w))| w > 0 || empty_allowed(i)), || {
            format!("column blocks: two or three of them, the first at offset 0, none empty but the second of three; got {blocks:?}")
        })?;
        let mut all = [(0, 0); 3];
        all[..blocks.len()].copy_from_slice(blocks);
        Ok(ColumnBlocks { blocks: all })
    }

    /// The columns in all: the blocks' widths summed.
    pub fn width(&self) -> usize {
        self.blocks.iter().map(|&(_, w)| w).sum()
    }

    /// How many blocks (an empty second one of three counted).
    pub fn count(&self) -> usize {
        if self.blocks[2].1 > 0 { 3 } else { 2 }
    }

    /// The blocks' width where they all have one.
    fn uniform_width(&self) -> Option<usize> {
        let w = self.blocks[0].1;
        self.blocks.iter().all(|&(_, x)| x == 0 || x == w).then_some(w)
    }

    /// Floats the operand spans for `m` rows.
    fn span(&self, m: usize) -> usize {
        self.blocks.iter().map(|&(at, w)| at + m * w).max().unwrap_or(0)
    }

    /// The kernels' (block2, block3, block2_at, block3_at): the columns where the second and
    /// third blocks start (0: none) and their offsets.
    pub(crate) fn params(blocks: Option<Self>) -> [u32; 4] {
        let Some(b) = blocks else { return [0; 4] };
        let [(_, w0), (at1, w1), (at2, w2)] = b.blocks;
        let third = if w2 > 0 { (w0 + w1) as u32 } else { 0 };
        [w0 as u32, third, at1 as u32, at2 as u32]
    }

    /// Checks these blocks against `m` rows of `columns` columns in `buf`.
    pub(crate) fn check(&self, op: &str, what: &str, buf: &GpuBuffer, m: usize, columns: usize) -> Result<()> {
        ensure(self.width() == columns, || format!("{op}: {what}'s blocks {self:?} span {} columns, not {columns}", self.width()))?;
        check_len(op, what, buf, self.span(m))
    }
}

/// Checks `buf` as `m` rows of `columns` columns: in `blocks` where given, else row-major.
pub(crate) fn check_rows(op: &str, what: &str, buf: &GpuBuffer, blocks: Option<ColumnBlocks>, m: usize, columns: usize) -> Result<()> {
    match blocks {
        Some(b) => b.check(op, what, buf, m, columns),
        None => check_len(op, what, buf, m * columns),
    }
}

/// How the result is combined with what `out` holds: `out = beta·out + alpha·product`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accumulate {
    pub alpha: f32,
    pub beta: f32,
}

impl Accumulate {
    pub const OVERWRITE: Accumulate = Accumulate { alpha: 1.0, beta: 0.0 };
    pub const ADD: Accumulate = Accumulate { alpha: 1.0, beta: 1.0 };
}

/// An RMSNorm of a product's input rows (HF's form: weight ⊙ x / sqrt(mean(x²) + eps)) that
/// the matrix-vector kernels apply as they read them: decoding, where the norm before q, k, v
/// or gate, up then has no launch of its own (the input is the residual stream itself).
#[derive(Clone, Copy)]
pub struct InputNorm<'a> {
    /// (K) the norm's weight.
    pub weight: &'a GpuBuffer,
    pub eps: f32,
}

/// Which of the three products to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKind {
    /// out(M,N) = inp(M,K)·weight(N,K)ᵀ
    Forward,
    /// dinp(M,K) = dout(M,N)·weight(N,K)
    BackwardInput,
    /// dweight(N,K) = dout(M,N)ᵀ·inp(M,K)
    BackwardWeight,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RegisterParams {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
    b_batched: u32,
}

/// shaders/pieces/strided_gemm.wgsl's Params (matmul_tiled.wgsl, matmul_coop.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StridedParams {
    m: u32,
    n: u32,
    r: u32,
    alpha: f32,
    beta: f32,
    a_si: u32,
    a_sr: u32,
    b_sj: u32,
    b_sr: u32,
    a_batch: u32,
    b_batch: u32,
    c_batch: u32,
    splits: u32,
    r_split: u32,
    /// LoRA dropout fused into the product (matmul_tiled.wgsl): 0 none, else [`DropOn`].
    drop_on: u32,
    drop_seed: u32,
    drop_p: f32,
    /// The low-rank term (matmul_tiled_low_rank.wgsl): its rank, scale and V's strides.
    term_r: u32,
    term_scale: f32,
    term_v_sj: u32,
    term_v_sr: u32,
    /// The matrix-vector kernels' input norm (matmul_tiled_normed.wgsl): its eps.
    norm_eps: f32,
    /// The matrix-vector kernels' term over stacked weights ([`StackedTerm`]).
    term_h_row: u32,
    term_h_part: u32,
    term_start1: u32,
    term_start2: u32,
    /// The tiled kernels' a and term's H in blocks along the reduction ([`ColumnBlocks`]).
    a_blocks: [u32; 4],
    h_blocks: [u32; 4],
    /// ... and a forward's output.
    c_blocks: [u32; 4],
    /// 1 where a's blocks lie along the output's rows (a weight gradient's a, read transposed).
    a_blocks_on_rows: u32,
    /// Floats between a split reduction's parts of the output (matmul_tiled.wgsl).
    c_split: u32,
    /// The matrix-vector kernels' term over stacked weights: the rows of a part without one
    /// ([`StackedTerm::skipped`]).
    term_skip_at: u32,
    term_skip: u32,
    /// 1 where the f16 tiles scale each row of a and of the term's H by a power of two
    /// (pieces/row_scales.wgsl): input gradients, whose small values f16 would lose.
    scale_rows: u32,
}

/// LoRA dropout on one side of a product: the mask of ops::dropout at each value's flat index
/// in its buffer, with probability `p`. The tiled kernels apply it as they stage the operand
/// (or store the output); the others run dropout_forward around the product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OperandDropout {
    pub on: DropOn,
    pub p: f32,
    pub seed: u32,
}

/// Which side of `out = beta·out + alpha·product(a, b)` dropout masks: a, b, or
/// alpha·product (before beta·out is added); for a low-rank term, its product alone
/// ([`LowRankTerm::dropout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropOn {
    A = 1,
    B = 2,
    Out = 3,
    Term = 4,
}

/// (drop_on, drop_seed, drop_p) of the params for `drop`.
fn drop_params(drop: Option<OperandDropout>) -> (u32, u32, f32) {
    drop.map_or((0, 0, 0.0), |x| (x.on as u32, super::cpu::lowbias32(x.seed), x.p))
}

pub use super::matmul_blocks::{REGISTER_BLOCK, REGISTER_NARROW_BLOCK, REGISTER_NARROW_WG, REGISTER_WG};
include!(concat!(env!("OUT_DIR"), "/matmul_entries.rs"));


impl MatmulKind {
    /// Its entry point in matmul.wgsl (core/build/ names them).
    fn entry(self) -> &'static str {
        F32_ENTRIES[self as usize]
    }

    /// Its entry point for the narrow register block.
    fn narrow_entry(self) -> &'static str {
        F32_NARROW_ENTRIES[self as usize]
    }

    /// Lengths of a, b and the output for one matrix of a batch.
    pub fn operand_lens(self, d: &MatmulDims) -> (usize, usize, usize) {
        match self {
            MatmulKind::Forward => (d.m * d.k, d.n * d.k, d.m * d.n),
            MatmulKind::BackwardInput => (d.m * d.n, d.n * d.k, d.m * d.k),
            MatmulKind::BackwardWeight => (d.m * d.n, d.m * d.k, d.n * d.k),
        }
    }

    /// The steps of the reduction.
    fn reduction(self, d: &MatmulDims) -> usize {
        match self {
            MatmulKind::Forward => d.k,
            MatmulKind::BackwardInput => d.n,
            MatmulKind::BackwardWeight => d.m,
        }
    }

    /// (rows, cols) of the output.
    fn out_shape(self, d: &MatmulDims) -> (usize, usize) {
        match self {
            MatmulKind::Forward => (d.m, d.n),
            MatmulKind::BackwardInput => (d.m, d.k),
            MatmulKind::BackwardWeight => (d.n, d.k),
        }
    }
}

/// Records `out = beta·out + alpha·product` for the product `kind` names. For
/// `Forward`, (a, b) = (inp, weight); `BackwardInput`: (dout, weight); `BackwardWeight`:
/// (dout, inp). A batched `BackwardWeight` (b batched) gives one gradient per batch; to sum
/// over a batch, flatten (B·T) into M instead.
pub fn matmul(
    ctx: &GpuContext,
    kind: MatmulKind,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
) -> Result<()> {
    let tiling = choose_tiling(ctx, kind, &d);
    matmul_with(ctx, kind, tiling, out, a, b, d, acc)
}

/// [`matmul`] with the tiling given; errors if the register tiling cannot take the sizes.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    ctx: &GpuContext,
    kind: MatmulKind,
    tiling: MatmulTiling,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
) -> Result<()> {
    launch(ctx, kind, tiling, out, a, b, d, acc, None, None, None)
}

/// [`matmul`] with LoRA dropout on one side (none where `drop.p` is 0).
#[allow(clippy::too_many_arguments)]
pub fn matmul_dropout(
    ctx: &GpuContext,
    kind: MatmulKind,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
    drop: OperandDropout,
) -> Result<()> {
    let tiling = choose_tiling(ctx, kind, &d);
    matmul_dropout_with(ctx, kind, tiling, out, a, b, d, acc, drop)
}

/// [`matmul_dropout`] with the tiling given: fused into the tiled kernels, else one
/// dropout_forward launch around the product, through a scratch buffer.
#[allow(clippy::too_many_arguments)]
pub fn matmul_dropout_with(
    ctx: &GpuContext,
    kind: MatmulKind,
    tiling: MatmulTiling,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
    drop: OperandDropout,
) -> Result<()> {
    ensure((0.0..1.0).contains(&drop.p), || format!("{}: the dropout probability {} is outside [0, 1)", kind.entry(), drop.p))?;
    ensure(drop.on != DropOn::Term, || format!("{}: dropout on a low-rank term needs the term (matmul_low_rank)", kind.entry()))?;
    if drop.p == 0.0 {
        return launch(ctx, kind, tiling, out, a, b, d, acc, None, None, None);
    }
    if tiling.is_tiled() {
        return launch(ctx, kind, tiling, out, a, b, d, acc, Some(drop), None, None);
    }
    let (a_len, b_len, _) = kind.operand_lens(&d);
    let (rows, cols) = kind.out_shape(&d);
    let (a_len, b_len, out_len) = (d.batch * a_len, if d.b_batched { d.batch * b_len } else { b_len }, d.batch * rows * cols);
    match drop.on {
        DropOn::A => {
            let dropped = ctx.alloc_scratch_f32(a_len)?;
            dropout_forward(ctx, &dropped, a, a_len, drop.p, drop.seed, 0.0)?;
            launch(ctx, kind, tiling, out, &dropped, b, d, acc, None, None, None)
        }
        DropOn::B => {
            let dropped = ctx.alloc_scratch_f32(b_len)?;
            dropout_forward(ctx, &dropped, b, b_len, drop.p, drop.seed, 0.0)?;
            launch(ctx, kind, tiling, out, a, &dropped, d, acc, None, None, None)
        }
        DropOn::Term => unreachable!("refused above"),
        DropOn::Out => {
            let product = ctx.alloc_scratch_f32(out_len)?;
            launch(ctx, kind, tiling, &product, a, b, d, Accumulate { alpha: acc.alpha, beta: 0.0 }, None, None, None)?;
            dropout_forward(ctx, out, &product, out_len, drop.p, drop.seed, acc.beta)
        }
    }
}

/// Records one product with the tiling given; `drop` and `term` only with the tiled kernels
/// (with a term, only the term's dropout), and `into` only with the plain tiled kernel (then
/// `out` is the parts' buffer): a split weight gradient's parts, summed later
/// ([`matmul_weight_parts`]).
#[allow(clippy::too_many_arguments)]
fn launch(
    ctx: &GpuContext,
    kind: MatmulKind,
    tiling: MatmulTiling,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
    drop: Option<OperandDropout>,
    term: Option<LowRankTerm>,
    into: Option<SplitParts>,
) -> Result<()> {
    let op = kind.entry();
    ensure(d.batch > 0 && d.m > 0 && d.n > 0 && d.k > 0, || format!("{op}: empty sizes {d:?}"))?;
    ensure(!(kind == MatmulKind::BackwardWeight && d.batch > 1 && !d.b_batched), || {
        format!("{op}: a batch of weight gradients needs b batched too (one gradient per batch); to sum over a batch, fold it into M")
    })?;
    ensure(!d.a_shared || tiling.is_tiled(), || format!("{op}: one a for a batch is for the tiled kernels, not {tiling:?}"))?;
    ensure(d.batch_strides.is_none() || tiling.is_tiled(), || format!("{op}: batch strides are for the tiled kernels, not {tiling:?}"))?;
    let bb = if d.b_batched { d.batch } else { 1 };
    let (rows, cols) = kind.out_shape(&d);
    let (a_len, b_len, c_len) = kind.operand_lens(&d);
    let strides = d.batch_strides.unwrap_or(BatchStrides { a: a_len, b: b_len, c: c_len });
    match d.a_blocks {
        Some(blocks) => blocks.check(op, "a", a, d.m, d.n)?,
        None => check_len(op, "a", a, batch_span(strides.a, a_len, if d.a_shared { 1 } else { d.batch }))?,
    }
    check_len(op, "b", b, batch_span(strides.b, b_len, bb))?;
    match (into, d.c_blocks) {
        (Some(_), _) => {}
        (None, Some(blocks)) => blocks.check(op, "out", out, rows, cols)?,
        (None, None) => check_len(op, "out", out, batch_span(strides.c, c_len, d.batch))?,
    }
    let term_rank = term.map_or(0, |t| t.rank);
    let flops = 2.0 * (d.batch * d.m * d.n * d.k + rows * cols * term_rank) as f64;
    let takes_term = d.batch == 1
        && match tiling {
            t if t.is_strided_gemm() => drop.is_none_or(|x| x.on == DropOn::Term),
            MatmulTiling::Gemv => drop.is_none(),
            _ => false,
        };
    ensure(term.is_none() || takes_term, || {
        format!("{op}: a low-rank term is added by the tiled kernels (and on cooperative matrices) to one unbatched product, with no dropout but its own (none in the matrix-vector kernel)")
    })?;
    ensure(term.is_none_or(|t| t.layout_fits(tiling.is_strided_gemm(), tiling == MatmulTiling::Gemv)), || format!("{op}: {tiling:?} cannot read a term laid out as {:?}", term.map(|t| t.layout)))?;
    let a_blocks_fit = match tiling {
        t if t.is_tiled() => kind != MatmulKind::Forward && (into.is_none() || kind == MatmulKind::BackwardWeight),
        MatmulTiling::Coop => kind == MatmulKind::BackwardInput && into.is_none(),
        _ => false,
    };
    ensure(d.a_blocks.is_none() || (a_blocks_fit && d.batch == 1), || {
        format!("{op}: a in blocks is for one input or weight gradient on the tiled kernels (split parts: a weight gradient's; on cooperative matrices: an input gradient's), not {kind:?} on {tiling:?} ({d:?})")
    })?;
    ensure(d.c_blocks.is_none() || (tiling.is_tiled() && kind == MatmulKind::Forward && d.batch == 1 && into.is_none() && drop.is_none()), || {
        format!("{op}: an output in blocks is for one forward on the tiled kernels, without dropout, not {kind:?} on {tiling:?} ({d:?})")
    })?;
    if let Some(t) = term {
        t.check_out_blocks(op, kind, d.c_blocks)?;
    }
    match tiling {
        MatmulTiling::Register | MatmulTiling::RegisterNarrow => {
            ensure(d.register_fits(), || {
                format!("{op}: the register tiling needs the vec4 dimensions to be multiples of 4, got {d:?}")
            })?;
            let params =
                RegisterParams { m: d.m as u32, n: d.n as u32, k: d.k as u32, alpha: acc.alpha, b_batched: d.b_batched as u32 };
            let (kernel, groups) = if tiling == MatmulTiling::Register {
                let (col_blocks, row_blocks) = (cols.div_ceil(REGISTER_BLOCK.1), rows.div_ceil(REGISTER_BLOCK.0));
                let groups = [col_blocks.div_ceil(REGISTER_WG.0) as u32, row_blocks.div_ceil(REGISTER_WG.1) as u32, d.batch as u32];
                (Kernel::new(Shader::Matmul, op, 0), groups)
            } else {
                let variant = Variant { name: "8x1", constants: &[("WG_X", REGISTER_NARROW_WG.0 as f64), ("WG_Y", REGISTER_NARROW_WG.1 as f64)] };
                // row blocks on x (core/build/)
                let (col_blocks, row_blocks) = (cols.div_ceil(REGISTER_NARROW_BLOCK.1), rows.div_ceil(REGISTER_NARROW_BLOCK.0));
                let groups = [row_blocks.div_ceil(REGISTER_NARROW_WG.0) as u32, col_blocks.div_ceil(REGISTER_NARROW_WG.1) as u32, d.batch as u32];
                (Kernel::new(Shader::Matmul, kind.narrow_entry(), 0).with_variant(variant), groups)
            };
            // The register kernels only overwrite (see matmul.wgsl's `st`).
            overwrite_then_accumulate(ctx, out, d.batch * rows * cols, acc.beta, |dest| {
                ctx.dispatch_counted(&kernel, &[a, b], &[dest], &params, groups, flops)
            })
        }
        MatmulTiling::Gemv => {
            ensure(kind == MatmulKind::Forward && d.batch == 1 && d.m <= GEMV_ROWS, || {
                format!("{op}: the matrix-vector kernel takes the forward of 1 to {GEMV_ROWS} rows, got {d:?}")
            })?;
            let params = gemv_term_params(gemv_params(d, acc), term);
            let groups = grid_rows(d.n);
            let (shader, inputs) = match term {
                Some(t) => (Shader::MatmulTiledLowRank, vec![a, b, t.h, t.v]),
                None => (Shader::MatmulTiled, vec![a, b]),
            };
            let kernel = Kernel::new(ctx.reduction_shader(shader), "matmul_gemv", 0).with_variant(gemv_variant(d.m, None));
            ctx.dispatch_counted(&kernel, &inputs, &[out], &params, groups, flops)
        }
        MatmulTiling::Tiled | MatmulTiling::TiledWide | MatmulTiling::TiledF16 | MatmulTiling::TiledWideF16 | MatmulTiling::Coop => {
            // (the device's cooperative matrices, checked before anything else is)
            let coop_shape = if tiling == MatmulTiling::Coop { Some(ctx.coop_shape_for(op)?) } else { None };
            ensure(!tiling.rounds_to_f16() || ctx.has_f16(), || format!("{op}: {tiling:?} needs an adapter with shader-f16"))?;
            let (m, n, k) = (d.m as u32, d.n as u32, d.k as u32);
            // (rows, cols, reduction, a_si, a_sr, b_sj, b_sr)
            let (pm, pn, pr, a_si, a_sr, b_sj, b_sr) = match kind {
                MatmulKind::Forward => (m, n, k, k, 1, k, 1),
                // in blocks, a's first block's rows are its width long
                MatmulKind::BackwardInput => (m, k, n, d.a_blocks.map_or(n, |b| b.blocks[0].1 as u32), 1, 1, k),
                MatmulKind::BackwardWeight => (n, k, m, 1, d.a_blocks.map_or(n, |b| b.blocks[0].1 as u32), 1, k),
            };
            let (tile_rows, tile_cols) = tiled_shape(ctx, tiling, cols).unwrap_or_else(|| {
                let side = coop_tile(ctx, d.batch * rows * cols);
                (side, side)
            });
            let tiles = cols.div_ceil(tile_cols) * rows.div_ceil(tile_rows);
            let (splits, r_split) = match into {
                Some(p) => (p.splits, (pr as usize).div_ceil(p.splits).next_multiple_of(8)),
                None => reduction_split(op, tiles, split_choice_for(ctx.tile_choice(), (tile_rows, tile_cols)), pr as usize, d.batch, tiling != MatmulTiling::Coop, d.batch * c_len)?,
            };
            // floats between a batch's outputs (c_batch) and between a split output's parts
            // (c_split): the caller's where it gives the parts, else in the scratch each part
            // holds the batch's outputs back to back
            let (c_batch, c_split) = match into {
                Some(p) => (if d.batch > 1 { strides.c } else { p.stride }, p.stride),
                None if splits > 1 => (c_len, d.batch * c_len),
                None => (strides.c, c_len),
            };
            // a split product's parts are unmasked: sum_splits masks their sum
            let (drop_on, drop_seed, drop_p) = drop_params(drop.filter(|x| splits == 1 || x.on != DropOn::Out));
            // parts to be summed later carry alpha (the one sum serves gradients of other alphas)
            let alpha = if into.is_some() || splits == 1 { acc.alpha } else { 1.0 };
            let (term_v_sj, term_v_sr) = term.map_or((0, 0), |t| t.v_strides(kind, cols));
            let params = StridedParams {
                m: pm,
                n: pn,
                r: pr,
                alpha,
                beta: if splits > 1 { 0.0 } else { acc.beta },
                a_si,
                a_sr,
                b_sj,
                b_sr,
                a_batch: if d.batch == 1 || d.a_shared { 0 } else { strides.a as u32 },
                b_batch: if d.batch > 1 && d.b_batched { strides.b as u32 } else { 0 },
                // (an unbatched split's parts at c_batch too, for the cooperative-matrix kernel)
                c_batch: c_batch as u32,
                c_split: c_split as u32,
                splits: splits as u32,
                r_split: r_split as u32,
                drop_on,
                drop_seed,
                drop_p,
                term_r: term_rank as u32,
                term_scale: term.map_or(0.0, |t| t.scale),
                term_v_sj,
                term_v_sr,
                a_blocks: ColumnBlocks::params(d.a_blocks),
                h_blocks: term.map_or([0; 4], |t| t.block_params()),
                c_blocks: ColumnBlocks::params(d.c_blocks),
                a_blocks_on_rows: (kind == MatmulKind::BackwardWeight) as u32,
                scale_rows: (tiling.rounds_to_f16() && kind == MatmulKind::BackwardInput) as u32,
                ..bytemuck::Zeroable::zeroed()
            };
            let groups = [cols.div_ceil(tile_cols) as u32, rows.div_ceil(tile_rows) as u32, (d.batch * splits) as u32];
            let shader = match (term.is_some(), tiling.rounds_to_f16()) {
                (false, false) => Shader::MatmulTiled,
                (true, false) => Shader::MatmulTiledLowRank,
                (false, true) => Shader::MatmulTiledF16,
                (true, true) => Shader::MatmulTiledF16LowRank,
            };
            let kernel = match coop_shape {
                Some(shape) => {
                    let shader = match (shape.side, term.is_some()) {
                        (16, false) => Shader::MatmulCoop,
                        (16, true) => Shader::MatmulCoopLowRank,
                        (_, false) => Shader::MatmulCoop8x8,
                        (_, true) => Shader::MatmulCoop8x8LowRank,
                    };
                    // (the context has cooperative matrices only in a shape with a variant)
                    Kernel::new(shader, "matmul_coop", 0).with_variant(coop_variant(shape, tile_rows, ctx.coop_prefetch()).expect("a variant for the context's shape"))
                }
                None => Kernel::new(shader, "matmul_tiled", 0).with_variant(tiled_variant(ctx, (tile_rows, tile_cols), false)),
            };
            let inputs: Vec<&GpuBuffer> = match term {
                Some(t) => vec![a, b, t.h, t.v],
                None => vec![a, b],
            };
            if let Some(p) = into {
                let parts = GpuBuffer::view(p.parts, p.at, p.parts.len_bytes() - p.at);
                return ctx.dispatch_counted(&kernel, &inputs, &[&parts], &params, groups, flops);
            }
            if splits == 1 {
                return ctx.dispatch_counted(&kernel, &inputs, &[out], &params, groups, flops);
            }
            let parts = ctx.alloc_scratch_f32(splits * c_split)?;
            ctx.dispatch_counted(&kernel, &inputs, &[&parts], &params, groups, flops)?;
            let into = SplitSum { splits, items: d.batch, item_stride: strides.c, blocks: d.c_blocks };
            sum_splits_dropping(ctx, out, &parts, rows, cols, into, acc, drop)
        }
    }
}

/// Floats that `items` operands (or parts) of `len`, `stride` apart, span.
fn batch_span(stride: usize, len: usize, items: usize) -> usize {
    (items - 1) * stride + len
}

/// Runs `write`, which stores `alpha·product` into the buffer it is given: straight into
/// `out` when beta is 0, else into a scratch buffer then `out = beta·out + scratch`.
pub(crate) fn overwrite_then_accumulate(
    ctx: &GpuContext,
    out: &GpuBuffer,
    len: usize,
    beta: f32,
    write: impl FnOnce(&GpuBuffer) -> Result<()>,
) -> Result<()> {
    if beta == 0.0 {
        return write(out);
    }
    let scratch = ctx.alloc_scratch_f32(len)?;
    write(&scratch)?;
    residual_accumulate(ctx, out, &scratch, beta, len)
}
