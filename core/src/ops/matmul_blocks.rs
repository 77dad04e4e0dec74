//! Outputs per invocation (rows, cols) and workgroups (x, y) of the register-blocked matmul
//! kernels. core/build/ unrolls the kernels from these numbers and names their entry points
//! after them; the launchers dispatch with them. Plain constants only: the build script
//! includes this file too.
//!
//! Larger blocks feed more FMAs per load, but llvmpipe's compile time grows steeply with the
//! unrolled body (docs/PERF.md).

/// matmul.wgsl (f32): 64×32 measured ~10 % faster than 32×32 and took two minutes per
/// kernel to compile; 32×32 takes ~5 s.
pub const REGISTER_BLOCK: (usize, usize) = (32, 32);
pub const REGISTER_WG: (usize, usize) = (8, 8);
/// The narrow variant for outputs of few columns (LoRA's h = x·Aᵀ, its input gradient dh and
/// dB; attention's products): on 16 columns the 32 × 32 block left half its columns clamped,
/// and its 8 × 8 workgroup 7 of every 8 SIMD lanes idle, since llvmpipe spreads a
/// workgroup's x over its lanes (2–3 GFLOP/s). Its row blocks run along x (core/build/), in
/// workgroups of 8 × 1: 9–16 GFLOP/s on those shapes.
pub const REGISTER_NARROW_BLOCK: (usize, usize) = (16, 16);
pub const REGISTER_NARROW_WG: (usize, usize) = (8, 1);

/// matmul_<format>.wgsl, large blocks for lavapipe. On lavapipe each buffer load is a loop
/// over the SIMD lanes, so a block must feed many FMAs per load: the large forward's
/// 32 × 24, reading each block of a W row once, makes about one load per 65 FMAs, as the f32
/// kernel's 32 × 32 does. Every block column inlines its own decoding, and llvmpipe's
/// compile time grows with the block (~20 s for the large forward, once per format).
pub const QUANT_FORWARD_LARGE: (usize, usize) = (32, 24);
/// Backward blocks span whole groups of 8 columns. Each step decodes 4 rows of W per 8
/// columns and reads one vec4 of the gradient per row: 32 rows × 16 columns ran 14–32 %
/// faster than 16 × 16 (about 6 FMAs per load, against 10) for ~3 s more compile per format;
/// 32 × 32 and 64 × 16 added little more for 15 s (docs/PERF.md).
pub const QUANT_BACKWARD_INPUT_LARGE: (usize, usize) = (32, 16);
/// Small blocks for real GPUs and SwiftShader.
pub const QUANT_FORWARD_SMALL: (usize, usize) = (4, 4);
pub const QUANT_BACKWARD_INPUT_SMALL: (usize, usize) = (4, 8);
/// The row kernel: the forward of a single row of x (decoding a token), 4 rows of W per
/// invocation.
pub const QUANT_FORWARD_ROW: (usize, usize) = (1, 4);
/// The quantized kernels' workgroup (WG_X, WG_Y).
pub const QUANT_WG: (usize, usize) = (8, 4);
/// The row kernel's workgroup: ROW_WG × 1.
pub const QUANT_ROW_WG: usize = 32;
