//! Which kernel and tile a product takes on a context: the register kernels on software
//! adapters, the matrix-vector kernel for a few rows, cooperative matrices or f16 tiles where
//! the context asks for f16, else the workgroup-tiled kernel in tiles of 64 or 128 (and each
//! tiling's pipeline variant, from the context's tuning).

use super::{MatmulDims, MatmulKind, GEMV_ROWS};
use crate::gpu::{CoopShape, KernelPaths, Variant};
use crate::GpuContext;

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
/// variant has as many invocations. `ahead`: matmul_coop.wgsl's values loaded a stage ahead
/// (PREFETCH; `GpuContext::coop_prefetch`) in tiles of 64, where its workgroup holds a stage
/// in 8 passes an invocation or fewer (64 invocations or more); else in turn. In tiles of 128
/// an invocation's 4 × 4 accumulators and its 64 values held ahead took ACO (RX 7900 XTX) past
/// its 256 VGPRs: 425 spilled.
pub(crate) fn coop_variant(shape: CoopShape, tile: usize, ahead: bool) -> Option<Variant> {
    macro_rules! variants {
        ($($wg:literal),*) => {
            [$(
                Variant { name: concat!("64x64, ", $wg, " invocations"), constants: &[("WG", $wg as f64), ("TILE", 64.0), ("PREFETCH", 0.0)] },
                Variant { name: concat!("128x128, ", $wg, " invocations"), constants: &[("WG", $wg as f64), ("TILE", 128.0), ("PREFETCH", 0.0)] },
                Variant { name: concat!("64x64, ", $wg, " invocations, a stage ahead"), constants: &[("WG", $wg as f64), ("TILE", 64.0), ("PREFETCH", 1.0)] },
            )*]
        };
    }
    const VARIANTS: [Variant; 18] = variants!(32, 64, 128, 256, 512, 1024);
    let wg = shape.invocations() as usize;
    let ahead = ahead && tile == 64 && wg >= 64;
    VARIANTS.into_iter().find(|v| v.constants[0].1 == wg as f64 && v.constants[1].1 == tile as f64 && v.constants[2].1 == ahead as u8 as f64)
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
