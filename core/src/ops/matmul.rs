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

use super::{check_len, grid_rows};
use super::dropout::dropout_forward;
use super::residual::residual_accumulate;
use super::swiglu::Activation;
use crate::error::ensure;
use crate::gpu::{grid_1d, CoopShape, Kernel, KernelPaths, Shader, Variant};
use crate::{Error, GpuBuffer, GpuContext, Result};
use std::sync::Arc;

mod split;
pub use split::{forward_splits, split_choice_for, valid_split_min_steps, SPLIT_MIN_STEPS, SPLIT_WORKGROUPS};
pub(crate) use split::{reduction_split, split_choice, BATCHED_MAX_REDUCTION};

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

/// The tiling a launch uses; tests run every one the device can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulTiling {
    /// 32×32 outputs per invocation, vec4 loads, no workgroup memory (software adapters).
    Register,
    /// The same in 16 × 16 blocks with the row blocks along x: outputs of few columns.
    RegisterNarrow,
    /// Workgroup-memory tiles of 64 × 64 outputs, 8 × 8 per invocation (real GPUs, any shape).
    Tiled,
    /// The same kernel in 128 × 128 tiles (256 invocations): for large outputs. Or in tiles of
    /// 128 × 64, 8 × 4 outputs per invocation, where the context says so
    /// ([`GpuContext::tile_columns`]).
    TiledWide,
    /// `Tiled` with its tiles staged in f16, products summed in f32 (matmul_tiled_f16.wgsl):
    /// forwards and input gradients (their rows scaled) where the context asks for f16 and
    /// the device has shader-f16 but no cooperative matrices.
    TiledF16,
    /// `TiledWide` in f16.
    TiledWideF16,
    /// A workgroup per output column: the forward of at most 16 rows (decoding) on GPUs.
    Gemv,
    /// Tiles of 64 × 64 on cooperative matrices (128 × 128 for large outputs, as `TiledWide`),
    /// inputs rounded to f16:
    /// forwards and input gradients where the context asks for it
    /// ([`GpuContext::with_f16_matmuls`]), an input gradient's rows scaled first.
    Coop,
}

impl MatmulTiling {
    /// The tilings that take any product (Gemv takes forwards of few rows only).
    pub const ALL: [MatmulTiling; 4] = [MatmulTiling::Register, MatmulTiling::RegisterNarrow, MatmulTiling::Tiled, MatmulTiling::TiledWide];

    /// Invocations per side of a workgroup of the tiled kernel (8 outputs each).
    fn tiled_side(self) -> Option<u32> {
        match self {
            MatmulTiling::Register | MatmulTiling::RegisterNarrow | MatmulTiling::Gemv | MatmulTiling::Coop => None,
            MatmulTiling::Tiled | MatmulTiling::TiledF16 => Some(8),
            MatmulTiling::TiledWide | MatmulTiling::TiledWideF16 => Some(16),
        }
    }

    /// Whether it is matmul_tiled.wgsl's kernel (which fuses dropout and low-rank terms).
    pub fn is_tiled(self) -> bool {
        self.tiled_side().is_some()
    }

    /// Whether it is one of the strided GEMM kernels (matmul_tiled.wgsl, matmul_coop.wgsl),
    /// which add a low-rank term with its dropout in their launch and read an input
    /// gradient's operands in column blocks (only the tiled ones write an output in blocks).
    pub fn is_strided_gemm(self) -> bool {
        self.is_tiled() || self == MatmulTiling::Coop
    }

    /// Whether it rounds its inputs to f16 (and needs a device with shader-f16, or with
    /// cooperative matrices).
    pub fn rounds_to_f16(self) -> bool {
        matches!(self, MatmulTiling::TiledF16 | MatmulTiling::TiledWideF16 | MatmulTiling::Coop)
    }
}

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

/// Outputs of at most this many columns take the narrow register kernels: the 32-column
/// blocks of the wide ones would fill at most 4 of llvmpipe's 8 SIMD lanes (which run along
/// x). Measured on llvmpipe (`bench ops --shape 384x128x64`, attention's shapes): 64 columns
/// (input and weight gradients) 6–7 → 14–17 GFLOP/s; 128 columns (forward) 9–13 → 11–14.
const REGISTER_NARROW_MAX_COLS: usize = 128;

/// The cooperative-matrix kernels' tile side for `outputs` values (pieces/coop_gemm.wgsl's
/// TILE): the side the context asks for, else 128 from its threshold for them as tuned
/// (`TileChoice::coop_wide_outputs`), else as the tiled kernels' ([`wide_tiles`]); else 64.
pub fn coop_tile(ctx: &GpuContext, outputs: usize) -> usize {
    let tiles = ctx.tile_choice();
    let wide = match (tiles.side, tiles.coop_wide_outputs) {
        (None, Some(from)) => outputs >= from,
        _ => wide_tiles(ctx, outputs),
    };
    if wide {
        128
    } else {
        64
    }
}

/// The cooperative-matrix kernels' workgroup on `shape` (its invocations: a subgroup of the
/// size it is sized for per block of the tile) in tiles of `tile` (64 or 128); None where no
/// variant has as many invocations.
pub(crate) fn coop_variant(shape: CoopShape, tile: usize) -> Option<Variant> {
    macro_rules! variants {
        ($($wg:literal),*) => {
            [$(
                Variant { name: concat!("64x64, ", $wg, " invocations"), constants: &[("WG", $wg as f64), ("TILE", 64.0)] },
                Variant { name: concat!("128x128, ", $wg, " invocations"), constants: &[("WG", $wg as f64), ("TILE", 128.0)] },
            )*]
        };
    }
    const VARIANTS: [Variant; 12] = variants!(32, 64, 128, 256, 512, 1024);
    VARIANTS.into_iter().find(|v| v.constants[0].1 == shape.invocations() as f64 && v.constants[1].1 == tile as f64)
}

/// The tiled kernels' workgroup in tiles of `side` rows (64 or 128; 8 outputs each way per
/// invocation), each step's values loaded during the previous step's sums or, where the
/// context says so (`GpuContext::tile_prefetch`), just before they are staged ("loaded in
/// turn"). matmul_tiled.wgsl sizes its workgroup by TX and TY, matmul/quant_tiled.wgsl by TQ
/// (`quantized`); the f32 tiles of 128 rows stage 8 or 16 steps (`GpuContext::tile_steps`),
/// are 128 or 64 columns wide (`GpuContext::tile_columns`: CQ, 4 columns an invocation) and
/// kept once or twice in workgroup memory (`GpuContext::tile_buffers`: BUFFERS).
pub(crate) fn tiled_variant(ctx: &GpuContext, (rows, cols): (usize, usize), quantized: bool) -> Variant {
    // [in turn]
    const NARROW: [Variant; 2] = [
        Variant { name: "64x64", constants: &[("TX", 8.0), ("TY", 8.0)] },
        Variant { name: "64x64, loaded in turn", constants: &[("TX", 8.0), ("TY", 8.0), ("PREFETCH", 0.0)] },
    ];
    // (tiles of 64 rows by 32 columns, 8 × 4 outputs an invocation: THIN_COLUMNS) [in turn]
    const THIN: [Variant; 2] = [
        Variant { name: "64x32", constants: &[("TX", 8.0), ("TY", 8.0), ("CQ", 1.0)] },
        Variant { name: "64x32, loaded in turn", constants: &[("TX", 8.0), ("TY", 8.0), ("PREFETCH", 0.0), ("CQ", 1.0)] },
    ];
    // (tiles of 128: staging 16 steps per iteration, 64 columns wide, and two tiles in
    // workgroup memory, where the context says so) [two tiles][columns 64][16 steps][in turn]
    const WIDE: [Variant; 16] = [
        Variant { name: "128x128", constants: &[("TX", 16.0), ("TY", 16.0)] },
        Variant { name: "128x128, loaded in turn", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0)] },
        Variant { name: "128x128, 16 steps", constants: &[("TX", 16.0), ("TY", 16.0), ("BK", 16.0)] },
        Variant { name: "128x128, loaded in turn, 16 steps", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("BK", 16.0)] },
        Variant { name: "128x64", constants: &[("TX", 16.0), ("TY", 16.0), ("CQ", 1.0)] },
        Variant { name: "128x64, loaded in turn", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("CQ", 1.0)] },
        Variant { name: "128x64, 16 steps", constants: &[("TX", 16.0), ("TY", 16.0), ("BK", 16.0), ("CQ", 1.0)] },
        Variant { name: "128x64, loaded in turn, 16 steps", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("BK", 16.0), ("CQ", 1.0)] },
        Variant { name: "128x128, two tiles", constants: &[("TX", 16.0), ("TY", 16.0), ("BUFFERS", 2.0)] },
        Variant { name: "128x128, loaded in turn, two tiles", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("BUFFERS", 2.0)] },
        Variant { name: "128x128, 16 steps, two tiles", constants: &[("TX", 16.0), ("TY", 16.0), ("BK", 16.0), ("BUFFERS", 2.0)] },
        Variant { name: "128x128, loaded in turn, 16 steps, two tiles", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("BK", 16.0), ("BUFFERS", 2.0)] },
        Variant { name: "128x64, two tiles", constants: &[("TX", 16.0), ("TY", 16.0), ("CQ", 1.0), ("BUFFERS", 2.0)] },
        Variant { name: "128x64, loaded in turn, two tiles", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("CQ", 1.0), ("BUFFERS", 2.0)] },
        Variant { name: "128x64, 16 steps, two tiles", constants: &[("TX", 16.0), ("TY", 16.0), ("BK", 16.0), ("CQ", 1.0), ("BUFFERS", 2.0)] },
        Variant { name: "128x64, loaded in turn, 16 steps, two tiles", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("BK", 16.0), ("CQ", 1.0), ("BUFFERS", 2.0)] },
    ];
    // matmul/quant_tiled.wgsl's: [tiles of 128][in turn]
    const QUANTIZED: [Variant; 4] = [
        Variant { name: "64x64", constants: &[("TQ", 8.0)] },
        Variant { name: "64x64, loaded in turn", constants: &[("TQ", 8.0), ("PREFETCH", 0.0)] },
        Variant { name: "128x128", constants: &[("TQ", 16.0)] },
        Variant { name: "128x128, loaded in turn", constants: &[("TQ", 16.0), ("PREFETCH", 0.0)] },
    ];
    let in_turn = !ctx.tile_prefetch() as usize;
    match (quantized, rows == 128) {
        (true, wide) => QUANTIZED[2 * wide as usize + in_turn],
        (false, false) if cols == THIN_COLUMNS => THIN[in_turn],
        (false, false) => NARROW[in_turn],
        (false, true) => WIDE[8 * (ctx.tile_buffers() == 2) as usize + 4 * (ctx.tile_columns() == 64) as usize + 2 * (ctx.tile_steps() == 16) as usize + in_turn],
    }
}

/// Outputs of at most this many columns take the f32 (and f16) tiles of 64 rows by as many
/// columns, each invocation summing 8 × 4 outputs, instead of 64 × 64: LoRA's x·Aᵀ, dh and dB,
/// whose columns are the rank (16 by default). In tiles of 64 × 64 three quarters of each
/// launch's sums fell past the output, and on the H100 those launches, a workgroup or two per
/// multiprocessor, were bound by each workgroup's iteration (2.4 µs: its loads, barriers and
/// 512 multiply-adds an invocation), not by the GPU's width.
pub const THIN_COLUMNS: usize = 32;

/// (rows, columns) of the f32 (and f16) tiles of `side` rows for an output `cols` wide: 64 × 32
/// for thin outputs, else as wide as tall (the context may narrow tiles of 128:
/// [`tiled_shape`]).
pub fn f32_tile(side: usize, cols: usize) -> (usize, usize) {
    match side {
        64 if cols <= THIN_COLUMNS => (64, THIN_COLUMNS),
        _ => (side, side),
    }
}

/// (rows, columns) of the output tiles `tiling` computes on `ctx` for an output `cols` wide (a
/// tiled kernel's), where it is one of the tiled kernels.
pub(crate) fn tiled_shape(ctx: &GpuContext, tiling: MatmulTiling, cols: usize) -> Option<(usize, usize)> {
    let side = 8 * tiling.tiled_side()? as usize;
    Some(match side {
        128 => (128, ctx.tile_columns()),
        _ => f32_tile(side, cols),
    })
}

/// What `bench ops --probes` times beside the f32 forward in tiles of 128 × 128 (values
/// loaded in turn, 8 steps an iteration): matmul_tiled.wgsl's PROBE. Never a product's kernel:
/// each sums the first 8 steps' product once per iteration, with the forward's arithmetic, so
/// that its time against the forward's tells where the forward's goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileProbe {
    /// Loads from memory in the first iteration only, and writes the values it holds to the
    /// tiles (with both barriers) in every later one: the forward less its loads.
    LoadsOnce,
    /// Writes the tiles in the first iteration only, every later one summing them again: the
    /// inner loop alone (workgroup-memory reads and multiply-adds).
    SumsOnly,
    /// SumsOnly with the invocations on their blocks in row-major order, each 32 on 16 × 2
    /// blocks (matmul_tiled.wgsl's ROW_LANES), not on 8 × 4 with their lanes paired on the
    /// words they read (pieces/block_place.wgsl): what the pairs save of the inner
    /// loop's reads of workgroup memory.
    SumsOnlyRowMajor,
}

impl TileProbe {
    pub const ALL: [TileProbe; 3] = [TileProbe::LoadsOnce, TileProbe::SumsOnly, TileProbe::SumsOnlyRowMajor];

    pub fn name(self) -> &'static str {
        match self {
            TileProbe::LoadsOnce => "loads once",
            TileProbe::SumsOnly => "sums only",
            TileProbe::SumsOnlyRowMajor => "sums only, row-major lanes",
        }
    }

    fn variant(self) -> Variant {
        match self {
            TileProbe::LoadsOnce => Variant { name: "128x128, loaded in turn, probe: loads once", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("PROBE", 1.0)] },
            TileProbe::SumsOnly => Variant { name: "128x128, loaded in turn, probe: sums only", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("PROBE", 2.0)] },
            TileProbe::SumsOnlyRowMajor => {
                Variant { name: "128x128, loaded in turn, probe: sums only, row-major lanes", constants: &[("TX", 16.0), ("TY", 16.0), ("PREFETCH", 0.0), ("PROBE", 2.0), ("ROW_LANES", 1.0)] }
            }
        }
    }
}

/// `probe` over the forward's operands: y(M×N) = ⌈K/8⌉ · Σ_{r<8} x(i, r)·w(j, r) (x M × K, w
/// N × K, K ≥ 8), in one launch of tiles of 128 × 128, its reduction never split (time it
/// where the output's tiles fill the GPU). Its FLOPs are counted as the forward's.
pub fn matmul_tiled_probe(ctx: &GpuContext, probe: TileProbe, out: &GpuBuffer, x: &GpuBuffer, w: &GpuBuffer, d: MatmulDims) -> Result<()> {
    let op = "matmul_tiled_probe";
    ensure(d.batch == 1 && d.m > 0 && d.n > 0 && d.k >= 8, || format!("{op}: one product of K ≥ 8 steps, got {d:?}"))?;
    check_len(op, "x", x, d.m * d.k)?;
    check_len(op, "w", w, d.n * d.k)?;
    check_len(op, "out", out, d.m * d.n)?;
    let (m, n, k) = (d.m as u32, d.n as u32, d.k as u32);
    let params = StridedParams { m, n, r: k, alpha: 1.0, a_si: k, a_sr: 1, b_sj: k, b_sr: 1, c_batch: m * n, c_split: m * n, splits: 1, r_split: k, ..bytemuck::Zeroable::zeroed() };
    let kernel = Kernel::new(Shader::MatmulTiled, "matmul_tiled", 0).with_variant(probe.variant());
    ctx.dispatch_counted(&kernel, &[x, w], &[out], &params, [n.div_ceil(128), m.div_ceil(128), 1], 2.0 * (d.m * d.n * d.k) as f64)
}

/// What `bench ops --probes` times beside the cooperative-matrix forward in tiles of 128 ×
/// 128 (matmul_coop.wgsl, on a context with cooperative matrices): pieces/coop_gemm.wgsl's
/// SUMS_ONLY, the tiles staged in the first iteration only, every later one summing them
/// again without barriers: the inner loop alone. y(M×N) = ⌈K/32⌉ · Σ_{r<32} x(i, r)·w(j, r)
/// (rounded to f16; x M × K, w N × K, K ≥ 32), its reduction never split (time it where the
/// output's tiles fill the GPU). Never a product's kernel; its FLOPs are counted as the
/// forward's.
pub fn matmul_coop_probe(ctx: &GpuContext, out: &GpuBuffer, x: &GpuBuffer, w: &GpuBuffer, d: MatmulDims) -> Result<()> {
    let op = "matmul_coop_probe";
    let shape = ctx.coop_shape_for(op)?;
    ensure(d.batch == 1 && d.m > 0 && d.n > 0 && d.k >= 32, || format!("{op}: one product of K ≥ 32 steps, got {d:?}"))?;
    check_len(op, "x", x, d.m * d.k)?;
    check_len(op, "w", w, d.n * d.k)?;
    check_len(op, "out", out, d.m * d.n)?;
    macro_rules! variants {
        ($($wg:literal),*) => {
            [$(Variant { name: concat!("128x128, ", $wg, " invocations, probe: sums only"), constants: &[("WG", $wg as f64), ("TILE", 128.0), ("SUMS_ONLY", 1.0)] },)*]
        };
    }
    const VARIANTS: [Variant; 6] = variants!(32, 64, 128, 256, 512, 1024);
    let variant = VARIANTS.into_iter().find(|v| v.constants[0].1 == shape.invocations() as f64);
    let variant = variant.ok_or_else(|| Error::Shape(format!("{op}: no workgroup of {} invocations", shape.invocations())))?;
    let (m, n, k) = (d.m as u32, d.n as u32, d.k as u32);
    let params = StridedParams { m, n, r: k, alpha: 1.0, a_si: k, a_sr: 1, b_sj: k, b_sr: 1, c_batch: m * n, c_split: m * n, splits: 1, r_split: k, ..bytemuck::Zeroable::zeroed() };
    let shader = if shape.side == 16 { Shader::MatmulCoop } else { Shader::MatmulCoop8x8 };
    let kernel = Kernel::new(shader, "matmul_coop", 0).with_variant(variant);
    ctx.dispatch_counted(&kernel, &[x, w], &[out], &params, [n.div_ceil(128), m.div_ceil(128), 1], 2.0 * (d.m * d.n * d.k) as f64)
}

/// Workgroup memory of matmul_tiled.wgsl's f32 tiles of 128 × 128 staging `steps` steps per
/// iteration in `buffers` tiles each of A and B (rows of 33 vec4s).
pub const fn wide_tile_bytes(steps: usize, buffers: usize) -> u32 {
    (2 * buffers * steps * 33 * 16) as u32
}

/// Workgroup memory of matmul_tiled.wgsl's f32 tiles of 128 staging 16 steps per iteration.
pub const WIDE_16_STEPS_BYTES: u32 = wide_tile_bytes(16, 1);

/// Outputs from which 128 × 128 tiles pay: at least 64 of them (a 1024 × 1024 output). A
/// guess for GPUs of every size; the CLI measures where it lies on the user's GPU
/// (`TileChoice::wide_outputs`).
pub const WIDE_OUTPUTS: usize = 1 << 20;

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

/// The reductions from which an f32 tiled product takes 128 × 128 tiles where the tuning says
/// so (`TileChoice::long_wide`), whatever its outputs: the lm_head's input gradient (a chunk of
/// rows × hidden, over the vocabulary; SmolLM2's 256 × 576 over 49,152, split into 12 parts
/// or more by SPLIT_MAX_STEPS) fills a GPU in either tile size, and on the H100 ran in tiles
/// of 64 at 13.7 TFLOP/s, where its forward in tiles of 128 ran at 24.
pub const LONG_REDUCTION: usize = 16384;

/// Whether the tiled kernels compute an output of `outputs` values in 128 × 128 tiles on `ctx`
/// (else 64 × 64): the side the context asks for, else from its tuned threshold, else from
/// [`WIDE_OUTPUTS`].
pub fn wide_tiles(ctx: &GpuContext, outputs: usize) -> bool {
    let tiles = ctx.tile_choice();
    match tiles.side {
        Some(side) => side == 128,
        None => outputs >= tiles.wide_outputs.unwrap_or(WIDE_OUTPUTS),
    }
}

/// The split reduction's last step: out = beta·out + alpha·Σ of the `splits` (rows × cols)
/// partial products in `parts`.
pub(crate) fn sum_splits(ctx: &GpuContext, out: &GpuBuffer, parts: &GpuBuffer, rows: usize, cols: usize, splits: usize, acc: Accumulate) -> Result<()> {
    sum_splits_dropping(ctx, out, parts, rows, cols, SplitSum::one(splits, None), acc, None)
}

/// [`sum_splits`] into an output in column blocks (a stacked forward's parts' outputs).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sum_splits_into_blocks(ctx: &GpuContext, out: &GpuBuffer, blocks: Option<ColumnBlocks>, parts: &GpuBuffer, rows: usize, cols: usize, splits: usize, acc: Accumulate) -> Result<()> {
    sum_splits_dropping(ctx, out, parts, rows, cols, SplitSum::one(splits, blocks), acc, None)
}

/// What a split reduction's parts hold and where their sum goes: `splits` parts, each of
/// `items` outputs of rows × cols back to back (a batch's), summed into the output's items
/// `item_stride` floats apart, or into its column blocks (one item).
#[derive(Clone, Copy)]
struct SplitSum {
    splits: usize,
    items: usize,
    item_stride: usize,
    blocks: Option<ColumnBlocks>,
}

impl SplitSum {
    fn one(splits: usize, blocks: Option<ColumnBlocks>) -> Self {
        SplitSum { splits, items: 1, item_stride: 0, blocks }
    }
}

/// [`sum_splits`] of `sum`'s parts, with the output's dropout where `drop` masks it
/// (DropOn::Out).
#[allow(clippy::too_many_arguments)]
fn sum_splits_dropping(ctx: &GpuContext, out: &GpuBuffer, parts: &GpuBuffer, rows: usize, cols: usize, sum: SplitSum, acc: Accumulate, drop: Option<OperandDropout>) -> Result<()> {
    let (drop_on, drop_seed, drop_p) = drop_params(drop.filter(|x| x.on == DropOn::Out));
    let item = rows * cols;
    let params = StridedParams {
        m: rows as u32,
        n: cols as u32,
        r: 0,
        alpha: acc.alpha,
        beta: acc.beta,
        a_si: 0,
        a_sr: 0,
        b_sj: 0,
        b_sr: 0,
        a_batch: 0,
        b_batch: 0,
        c_batch: if sum.items > 1 { sum.item_stride } else { item } as u32,
        c_split: (sum.items * item) as u32,
        splits: sum.splits as u32,
        r_split: 0,
        drop_on,
        drop_seed,
        drop_p,
        c_blocks: ColumnBlocks::params(sum.blocks),
        ..bytemuck::Zeroable::zeroed()
    };
    ctx.dispatch(&Kernel::new(Shader::MatmulTiled, "matmul_sum_splits", 5), &[parts], &[out], &params, grid_1d((sum.items * item) as u64, 256))
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

/// The tiling `matmul` picks for this adapter and these sizes: f16 for forwards and input
/// gradients where the context asks for f16 matmuls.
pub fn choose_tiling(ctx: &GpuContext, kind: MatmulKind, d: &MatmulDims) -> MatmulTiling {
    choose_tiling_f16(ctx, kind, d, ctx.f16_matmuls() && kind != MatmulKind::BackwardWeight)
}

/// The tiling for LoRA's own products, whose reduction or output is the rank wide: f32 even
/// where the context asks for f16 matmuls. Their FLOPs are few, and an adapter's values (B
/// starts at 0 and grows by the learning rate) would fall below f16's normal range.
pub fn choose_f32_tiling(ctx: &GpuContext, kind: MatmulKind, d: &MatmulDims) -> MatmulTiling {
    choose_tiling_f16(ctx, kind, d, false)
}

/// [`choose_tiling`] with f16 tilings where `f16`.
fn choose_tiling_f16(ctx: &GpuContext, kind: MatmulKind, d: &MatmulDims, f16: bool) -> MatmulTiling {
    let (_, cols) = kind.out_shape(d);
    if ctx.kernel_paths() != KernelPaths::Gpu && d.register_fits() {
        if cols <= REGISTER_NARROW_MAX_COLS {
            MatmulTiling::RegisterNarrow
        } else {
            MatmulTiling::Register
        }
    } else if ctx.kernel_paths() == KernelPaths::Gpu && kind == MatmulKind::Forward && d.batch == 1 && d.m <= GEMV_ROWS {
        MatmulTiling::Gemv
    } else if f16 && ctx.has_cooperative_matrix() && d.batch_strides.is_none() && !d.a_shared {
        // (operands at strides of their own, or one a for a batch: the tiled kernels only)
        MatmulTiling::Coop
    } else {
        tiled_for(ctx, kind, d, f16)
    }
}

/// Whether the forward of `d` runs here on the tiled kernels, which write the output in
/// blocks (`MatmulDims::c_blocks`).
pub fn forward_takes_blocks(ctx: &GpuContext, d: &MatmulDims) -> bool {
    d.batch == 1 && choose_tiling(ctx, MatmulKind::Forward, d).is_tiled()
}

/// The workgroup-tiled kernel's tiling on `ctx` for a `kind` product of `d`: 128 × 128 tiles
/// for large outputs ([`wide_tiles`]) and, in f32 where the tuning measured them faster there
/// (`TileChoice::long_wide`), for reductions of `LONG_REDUCTION` steps or more; else 64 × 64;
/// with its tiles in f16 where `f16`.
pub fn tiled_for(ctx: &GpuContext, kind: MatmulKind, d: &MatmulDims, f16: bool) -> MatmulTiling {
    let (rows, cols) = kind.out_shape(d);
    let tiles = ctx.tile_choice();
    let long = !f16 && tiles.side.is_none() && tiles.long_wide && kind.reduction(d) >= LONG_REDUCTION;
    match (f16, long || wide_tiles(ctx, d.batch * rows * cols)) {
        (false, false) => MatmulTiling::Tiled,
        (false, true) => MatmulTiling::TiledWide,
        (true, false) => MatmulTiling::TiledF16,
        (true, true) => MatmulTiling::TiledWideF16,
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

/// A low-rank product added to a forward or an input-gradient matmul: LoRA's `scale·h·Bᵀ`
/// (Forward: `h` (M, rank), `v` = B (N, rank)) or `dh·A` (BackwardInput: `h` = dh (M, rank),
/// `v` = A (rank, K)).
#[derive(Clone, Copy)]
pub struct LowRankTerm<'a> {
    pub h: &'a GpuBuffer,
    pub v: &'a GpuBuffer,
    pub rank: usize,
    pub scale: f32,
    /// Dropout on the term's product alone, at each output's flat index (LoRA's mask on its
    /// part of dx): (p, seed); p 0 for none.
    pub dropout: (f32, u32),
    /// How H is laid out.
    pub layout: TermLayout,
}

/// The layout of a low-rank term's H.
#[derive(Clone, Copy, Debug)]
pub enum TermLayout {
    /// One row-major (M, rank) matrix.
    Rows,
    /// A forward's term over stacked weights (the matrix-vector kernels only).
    Stacked(StackedTerm),
    /// A term over stacked weights (the tiled kernels only), each part's H a block along the
    /// rank: an input gradient's parts' dh against their A's back to back in V; a forward's
    /// parts' x·Aᵀ (one rank) against their B's stacked by rows in V, each output block taking
    /// its own (V block-diagonal; the output in as many blocks: `MatmulDims::c_blocks`).
    Blocks(ColumnBlocks),
}

/// The term of stacked weights' product (q, k and v as one matmul, each adapted target with
/// its LoRA; V: their B's back to back): the adapted targets' h lie side by side in H,
/// `h_part` floats apart, each row `h_row` floats long; output rows from `starts[0]` on take
/// the second's, from `starts[1]` on the third's (usize::MAX: none); the `skipped[1]` rows from
/// `skipped[0]` on (a target the adapter leaves alone: k of q_proj, v_proj) take none, and V
/// holds no rows for them ([0, 0]: none).
#[derive(Clone, Copy, Debug)]
pub struct StackedTerm {
    pub h_row: usize,
    pub h_part: usize,
    pub starts: [usize; 2],
    pub skipped: [usize; 2],
}

impl LowRankTerm<'_> {
    /// The matrix-vector kernels' (term_h_row, term_h_part, term_start1, term_start2,
    /// term_skip_at, term_skip).
    pub(crate) fn gemv_layout(&self) -> [u32; 6] {
        match self.layout {
            TermLayout::Stacked(s) => {
                let [start1, start2] = s.starts.map(|x| x.min(u32::MAX as usize) as u32);
                [s.h_row as u32, s.h_part as u32, start1, start2, s.skipped[0] as u32, s.skipped[1] as u32]
            }
            _ => [self.rank as u32, 0, u32::MAX, u32::MAX, 0, 0],
        }
    }

    /// The tiled kernels' h_blocks params.
    pub(crate) fn block_params(&self) -> [u32; 4] {
        ColumnBlocks::params(match self.layout {
            TermLayout::Blocks(b) => Some(b),
            _ => None,
        })
    }

    /// Whether a launch of `kernel` (tiled: the workgroup-tiled kernels; gemv: the
    /// matrix-vector ones) reads this term's layout.
    pub(crate) fn layout_fits(&self, tiled: bool, gemv: bool) -> bool {
        match self.layout {
            TermLayout::Rows => true,
            TermLayout::Stacked(_) => gemv,
            TermLayout::Blocks(_) => tiled,
        }
    }

    /// The term as a product of its own, in `kind`'s layout, into `m` rows of `width` columns.
    fn dims(&self, kind: MatmulKind, m: usize, width: usize) -> MatmulDims {
        match kind {
            MatmulKind::BackwardInput => MatmulDims::new(m, self.rank, width),
            _ => MatmulDims::new(m, width, self.rank),
        }
    }

    /// V's strides (term_v_sj, term_v_sr) for a `kind` product into `width` columns: B (width,
    /// rank) for a forward (a blocked forward's B's: one block's rank wide), A (rank, width)
    /// for an input gradient.
    pub(crate) fn v_strides(&self, kind: MatmulKind, width: usize) -> (u32, u32) {
        match (kind, self.layout) {
            (MatmulKind::Forward, TermLayout::Blocks(b)) => (b.uniform_width().unwrap_or(self.rank) as u32, 1),
            (MatmulKind::Forward, _) => (self.rank as u32, 1),
            _ => (1, width as u32),
        }
    }

    /// out(m, width) += alpha·scale·term as a launch of its own, for a `kind` product (the
    /// kernels that cannot add it to their product).
    pub fn add_alone(&self, ctx: &GpuContext, kind: MatmulKind, out: &GpuBuffer, m: usize, width: usize, alpha: f32) -> Result<()> {
        let dims = self.dims(kind, m, width);
        let acc = Accumulate { alpha: alpha * self.scale, beta: 1.0 };
        matmul_dropout(ctx, kind, out, self.h, self.v, dims, acc, self.operand_dropout(DropOn::Out))
    }

    /// Checks the term against a `kind` product of `m` rows into `width` columns.
    pub(crate) fn check(&self, op: &str, kind: MatmulKind, m: usize, width: usize) -> Result<()> {
        ensure(kind != MatmulKind::BackwardWeight, || format!("{op}: a low-rank term is added to a forward or an input gradient, not to {kind:?}"))?;
        ensure(self.rank > 0, || format!("{op}: the low-rank term has rank 0"))?;
        ensure((0.0..1.0).contains(&self.dropout.0), || {
            format!("{op}: the low-rank term's dropout probability {} is outside [0, 1)", self.dropout.0)
        })?;
        let (h_len, v_len, _) = kind.operand_lens(&self.dims(kind, m, width));
        match self.layout {
            TermLayout::Stacked(s) => {
                let parts = 1 + s.starts.iter().filter(|&&x| x < width).count();
                ensure(kind == MatmulKind::Forward && self.dropout.0 == 0.0 && s.h_row >= self.rank, || format!("{op}: a term over stacked weights is a forward's, without dropout, its rows no shorter than its rank ({s:?})"))?;
                ensure(s.skipped[0] + s.skipped[1] <= width, || format!("{op}: a term over stacked weights skips rows {:?} past its {width}", s.skipped))?;
                check_len(op, "the low-rank term's h", self.h, (parts - 1) * s.h_part + (m - 1) * s.h_row + self.rank)?;
                return check_len(op, "the low-rank term's v", self.v, (width - s.skipped[1]) * self.rank);
            }
            TermLayout::Blocks(b) => {
                b.check(op, "the low-rank term's h", self.h, m, self.rank)?;
                if kind == MatmulKind::Forward {
                    // the parts' B's stacked by rows, one block's rank wide: checked against
                    // the output's blocks (check_out_blocks)
                    b.uniform_width().ok_or_else(|| Error::Shape(format!("{op}: a forward's term in blocks of unequal ranks ({b:?})")))?;
                    ensure(self.dropout.0 == 0.0, || format!("{op}: a forward's term in blocks has no dropout of its own"))?;
                    return Ok(());
                }
                ensure(b.blocks[..b.count()].iter().all(|&(_, w)| w > 0), || format!("{op}: an input gradient's term in blocks with an empty one ({b:?})"))?;
            }
            TermLayout::Rows => check_len(op, "the low-rank term's h", self.h, h_len)?,
        }
        check_len(op, "the low-rank term's v", self.v, v_len)
    }

    /// Checks that a forward's term is in blocks where its output (`out_blocks`) is: each
    /// output block takes its own part's term (V block-diagonal: the parts' B's stacked by
    /// rows), where the term has a block for it that is not empty; as many blocks, or one
    /// fewer (the last part without a term).
    pub(crate) fn check_out_blocks(&self, op: &str, kind: MatmulKind, out_blocks: Option<ColumnBlocks>) -> Result<()> {
        if kind != MatmulKind::Forward {
            return Ok(());
        }
        let (term, out) = match (self.layout, out_blocks) {
            (TermLayout::Blocks(t), Some(o)) if t.count() <= o.count() => (t, o),
            (TermLayout::Blocks(_), None) | (_, Some(_)) => {
                return Err(Error::Shape(format!(
                    "{op}: a forward's term in blocks needs the output in as many blocks or one more, and an output in blocks a term in blocks; got the term's {:?}, the output's {out_blocks:?}",
                    self.layout
                )))
            }
            _ => return Ok(()),
        };
        // V: the B's of the output blocks whose term block is not empty
        let rows: usize = out.blocks.iter().zip(term.blocks).filter(|(_, (_, w))| *w > 0).map(|(&(_, cols), _)| cols).sum();
        let r = term.uniform_width().expect("checked by check");
        check_len(op, "the low-rank term's v", self.v, rows * r)
    }

    /// Its dropout, as the mask on `on`.
    fn operand_dropout(&self, on: DropOn) -> OperandDropout {
        OperandDropout { on, p: self.dropout.0, seed: self.dropout.1 }
    }
}

/// `out = beta·out + alpha·(product + scale·term)` for a Forward or BackwardInput product of
/// one matrix: the tiled kernels add the term after their reduction, in the same launch
/// (matmul_tiled_low_rank.wgsl), and so does the matrix-vector kernel (a forward's term,
/// without dropout); the others launch it as a second product.
#[allow(clippy::too_many_arguments)]
pub fn matmul_low_rank(
    ctx: &GpuContext,
    kind: MatmulKind,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
    term: LowRankTerm,
) -> Result<()> {
    let tiling = choose_tiling(ctx, kind, &d);
    matmul_low_rank_with(ctx, kind, tiling, out, a, b, d, acc, term)
}

/// [`matmul_low_rank`] with the tiling given.
#[allow(clippy::too_many_arguments)]
pub fn matmul_low_rank_with(
    ctx: &GpuContext,
    kind: MatmulKind,
    tiling: MatmulTiling,
    out: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    d: MatmulDims,
    acc: Accumulate,
    term: LowRankTerm,
) -> Result<()> {
    let op = kind.entry();
    ensure(d.batch == 1, || format!("{op}: a low-rank term is added to a product of one matrix, got {d:?}"))?;
    term.check(op, kind, d.m, kind.out_shape(&d).1)?;
    // (the kernels that cannot add the term add it alone, which reads H as rows)
    ensure(term.layout_fits(tiling.is_strided_gemm(), tiling == MatmulTiling::Gemv), || format!("{op}: {tiling:?} cannot read a term laid out as {:?}", term.layout))?;
    let masked = term.dropout.0 > 0.0;
    if tiling.is_strided_gemm() || (tiling == MatmulTiling::Gemv && !masked) {
        let drop = masked.then(|| term.operand_dropout(DropOn::Term));
        return launch(ctx, kind, tiling, out, a, b, d, acc, drop, Some(term), None);
    }
    launch(ctx, kind, tiling, out, a, b, d, acc, None, None, None)?;
    term.add_alone(ctx, kind, out, d.m, kind.out_shape(&d).1, acc.alpha)
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
fn gemv_term_params(params: StridedParams, term: Option<LowRankTerm>) -> StridedParams {
    let Some(t) = term else { return params };
    let (term_v_sj, term_v_sr) = t.v_strides(MatmulKind::Forward, 0);
    let [term_h_row, term_h_part, term_start1, term_start2, term_skip_at, term_skip] = t.gemv_layout();
    StridedParams { term_r: t.rank as u32, term_scale: t.scale, term_v_sj, term_v_sr, term_h_row, term_h_part, term_start1, term_start2, term_skip_at, term_skip, ..params }
}

/// The matrix-vector kernels' params for out(M, N) = beta·out + alpha·inp(M, K)·W(N, K)ᵀ.
fn gemv_params(d: MatmulDims, acc: Accumulate) -> StridedParams {
    let (m, n, k) = (d.m as u32, d.n as u32, d.k as u32);
    StridedParams { m, n, r: k, alpha: acc.alpha, beta: acc.beta, a_si: k, a_sr: 1, b_sj: k, b_sr: 1, splits: 1, r_split: k, ..bytemuck::Zeroable::zeroed() }
}

/// Where the parts of a split weight gradient go when they are summed later, together with
/// other gradients' ([`matmul_weight_parts`]): part s of the product at `at` bytes plus
/// s·`stride` floats into `parts`. One [`sum_splits`] over a region of gradients laid out as
/// the parts are then replaces a sum per gradient.
#[derive(Clone, Copy)]
pub struct SplitParts<'a> {
    pub parts: &'a Arc<GpuBuffer>,
    /// A multiple of the adapter's storage offset alignment (the parts are bound from there).
    pub at: u64,
    pub stride: usize,
    pub splits: usize,
}

/// Parts a weight gradient's reduction over `m` rows is split into on this context's
/// kernels, for [`SplitParts`]: from the split the tiled kernels give an output of one tile
/// (so every gradient of a layer can share it), in parts of the thin tiles' fewest steps
/// (LoRA's dB is a thin output, dA the rank's rows: where the tuning found shorter parts
/// faster for x·Aᵀ, they are taken here too); None where they would not split it or the
/// context does not run them (the register kernels do not split).
pub fn weight_grad_splits(ctx: &GpuContext, m: usize) -> Option<usize> {
    let splits = weight_grad_parts(m, split_choice_for(ctx.tile_choice(), (64, THIN_COLUMNS)).1);
    (ctx.kernel_paths() == KernelPaths::Gpu && splits > 1).then_some(splits)
}

/// The parts of [`weight_grad_splits`] on any context that runs the tiled kernels (1: none).
/// Parts of at least `min_steps` each ([`SPLIT_MIN_STEPS`] unless the context's TileChoice
/// says otherwise).
pub fn weight_grad_parts(m: usize, min_steps: usize) -> usize {
    reduction_split("a weight gradient", 1, (SPLIT_WORKGROUPS, min_steps), m, 1, true, 0).map_or(1, |(splits, _)| splits)
}

/// The split parts of the weight gradient `alpha·aᵀ·b` (a BackwardWeight product, with LoRA
/// dropout on b's side where `drop` has p > 0) into `dest`, on the tiled kernel; a later
/// [`sum_splits`] adds them into the gradient. A batch (b batched) gives one gradient per item,
/// each part holding them all (`d.batch_strides`' c apart).
#[allow(clippy::too_many_arguments)]
pub fn matmul_weight_parts(ctx: &GpuContext, dest: SplitParts, a: &GpuBuffer, b: &GpuBuffer, d: MatmulDims, alpha: f32, drop: Option<OperandDropout>) -> Result<()> {
    let op = MatmulKind::BackwardWeight.entry();
    let drop = drop.filter(|x| x.p > 0.0);
    ensure(drop.is_none_or(|x| x.on == DropOn::B && x.p < 1.0), || format!("{op}: split parts take dropout below 1 on the input's side only"))?;
    let (_, _, len) = MatmulKind::BackwardWeight.operand_lens(&d);
    // a batch's gradients (one per item) lie in each part
    let len = batch_span(d.batch_strides.map_or(len, |s| s.c), len, d.batch);
    let end = dest.at + 4 * batch_span(dest.stride, len, dest.splits) as u64;
    ensure(dest.splits > 1 && dest.stride >= len && end <= dest.parts.len_bytes(), || {
        format!("{op}: {} parts of {len} floats every {} from byte {} do not fit a buffer of {} bytes ({d:?})", dest.splits, dest.stride, dest.at, dest.parts.len_bytes())
    })?;
    let acc = Accumulate { alpha, beta: 0.0 };
    // (64 × 64 tiles whatever the output, unless the run asks for 128: training lays the
    // parts out for the split SPLIT_WORKGROUPS gives them)
    let tiling = if ctx.tile_choice().side == Some(128) { MatmulTiling::TiledWide } else { MatmulTiling::Tiled };
    launch(ctx, MatmulKind::BackwardWeight, tiling, dest.parts, a, b, d, acc, drop, None, Some(dest))
}

/// out[z](M, N) = dropout(x)·w_zᵀ for the `d.batch` weights w_z (N, K) back to back in `w`,
/// out[z] at `dest.at` bytes plus z·`dest.stride` floats of `dest.parts` (`dest.splits` 1): one
/// input by several weights in one launch of the tiled kernel, one dropout mask on x for all
/// of them (LoRA's x·Aᵀ of the targets that read the same input).
pub fn matmul_shared_input(ctx: &GpuContext, dest: SplitParts, x: &GpuBuffer, w: &GpuBuffer, d: MatmulDims, drop: OperandDropout) -> Result<()> {
    let op = "matmul_shared_input";
    let end = dest.at + 4 * batch_span(dest.stride, d.m * d.n, d.batch) as u64;
    ensure(d.a_shared && d.b_batched && dest.splits == 1 && dest.stride >= d.m * d.n && end <= dest.parts.len_bytes(), || {
        format!("{op}: {} outputs of {}×{} every {} floats from byte {} do not fit a buffer of {} bytes ({d:?})", d.batch, d.m, d.n, dest.stride, dest.at, dest.parts.len_bytes())
    })?;
    ensure(drop.on == DropOn::A && (0.0..1.0).contains(&drop.p), || format!("{op}: dropout below 1 on the input only, got {drop:?}"))?;
    let d = MatmulDims { batch_strides: Some(BatchStrides { a: 0, b: d.n * d.k, c: dest.stride }), ..d };
    let tiling = tiled_for(ctx, MatmulKind::Forward, &d, false);
    // (the outputs as one operand: a few tiles' reductions split, each part holding them all)
    let out = GpuBuffer::view(dest.parts, dest.at, 4 * batch_span(dest.stride, d.m * d.n, d.batch) as u64);
    launch(ctx, MatmulKind::Forward, tiling, &out, x, w, d, Accumulate::OVERWRITE, (drop.p > 0.0).then_some(drop), None, None)
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
                    Kernel::new(shader, "matmul_coop", 0).with_variant(coop_variant(shape, tile_rows).expect("a variant for the context's shape"))
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
