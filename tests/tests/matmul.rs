//! f32 matmul: the CPU reference against finite differences, and every GPU tiling against
//! the CPU reference on random shapes (sizes off the tile included).

use hearth_core::ops::{cpu, fma_peak};
use hearth_core::ops::swiglu::Activation;
use hearth_core::ops::matmul::{matmul_dropout_with, matmul_gemv_gated, matmul_gemv_normed, matmul_coop_probe, matmul_low_rank_with, matmul_tiled_probe, matmul_with, Accumulate, DropOn, InputNorm, LowRankTerm, MatmulDims, MatmulKind, MatmulTiling, OperandDropout, ColumnBlocks, TermLayout, TileProbe};
use hearth_tests::*;

// f32 accumulation over K ≤ 300 terms of magnitude ≤ 1: differences stay near 1e-5.
const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-4;

#[test]
fn cpu_matmul_backward_matches_finite_differences() {
    let mut rng = Rng::new(1);
    let (m, n, k) = (3, 5, 4);
    let x = to_f64(&rng.vec_uniform(m * k, -1.0, 1.0));
    let w = to_f64(&rng.vec_uniform(n * k, -1.0, 1.0));
    let g = to_f64(&rng.vec_uniform(m * n, -1.0, 1.0));
    let mut dx = vec![0.0; m * k];
    let mut dw = vec![0.0; n * k];
    cpu::matmul_backward_input(&mut dx, &g, &w, m, n, k);
    cpu::matmul_backward_weight(&mut dw, &g, &x, m, n, k);
    let loss = |x: &[f64], w: &[f64]| {
        let mut y = vec![0.0; m * n];
        cpu::matmul_forward(&mut y, x, w, m, n, k);
        dot(&y, &g)
    };
    let all_x: Vec<usize> = (0..m * k).collect();
    let all_w: Vec<usize> = (0..n * k).collect();
    assert_grad("dx", &dx, &finite_diff(&mut |x| loss(x, &w), &x, &all_x, 1e-6));
    assert_grad("dw", &dw, &finite_diff(&mut |w| loss(&x, w), &w, &all_w, 1e-6));
}

fn reference(kind: MatmulKind, a: &[f32], b: &[f32], d: &MatmulDims) -> Vec<f64> {
    let (a, b) = (to_f64(a), to_f64(b));
    let (m, n, k) = (d.m, d.n, d.k);
    let (a_len, b_len, c_len) = kind.operand_lens(d);
    let mut out = vec![0.0; d.batch * c_len];
    for z in 0..d.batch {
        let a = &a[z * a_len..][..a_len];
        let b = if d.b_batched { &b[z * b_len..][..b_len] } else { &b[..b_len] };
        let c = &mut out[z * c_len..][..c_len];
        cpu::matmul(kind, c, a, b, m, n, k);
    }
    out
}

fn check(kind: MatmulKind, tiling: MatmulTiling, d: MatmulDims, acc: Accumulate, rng: &mut Rng) {
    with_gpu!(ctx => {
        check_on(ctx, kind, tiling, d, acc, rng);
    });
}

/// [`check`] on `ctx`. The f16 tilings (f16 tiles, cooperative matrices) round their inputs
/// to f16: so do the inputs here, and what remains to compare is the f32 accumulation.
fn check_on(ctx: &hearth_core::GpuContext, kind: MatmulKind, tiling: MatmulTiling, d: MatmulDims, acc: Accumulate, rng: &mut Rng) {
    let (a_len, b_len, c_len) = kind.operand_lens(&d);
    let bb = if d.b_batched { d.batch } else { 1 };
    let round = |v: Vec<f32>| -> Vec<f32> {
        if tiling.rounds_to_f16() { to_f16(v) } else { v }
    };
    let a = round(rng.vec_uniform(d.batch * a_len, -1.0, 1.0));
    let b = round(rng.vec_uniform(bb * b_len, -1.0, 1.0));
    let prior = rng.vec_uniform(d.batch * c_len, -1.0, 1.0);
    let out = if acc.beta == 0.0 { poisoned(ctx, prior.len()) } else { upload(ctx, &prior) };
    matmul_with(ctx, kind, tiling, &out, &upload(ctx, &a), &upload(ctx, &b), d, acc).unwrap();
    let want: Vec<f64> = reference(kind, &a, &b, &d)
        .iter()
        .zip(&prior)
        .map(|(p, &c)| acc.alpha as f64 * p + acc.beta as f64 * c as f64)
        .collect();
    assert_close(&format!("{kind:?} {tiling:?} {d:?}"), &read(ctx, &out), &want, ATOL, RTOL);
}

/// Lengths of a, b and the output for one matrix of a batch.
/// matmul_coop.wgsl, where the adapter offers cooperative matrices in its form (lavapipe
/// from Mesa 26.1: tests/coop/run.sh runs this), in tiles of 64 (as taken for outputs below a
/// million) and of 128: forwards on random shapes off the tiles, batched, accumulating, and
/// over reductions long enough to split; input gradients likewise, with LoRA's term and its
/// dropout, rows from 1e-9 to 1e5, and in blocks; and a weight gradient's layout.
#[test]
fn coop_matmul_matches_cpu_where_offered() {
    let Some(ctx) = gpu_coop() else {
        eprintln!("SKIPPED: this adapter has no cooperative matrices of 16 × 16 × 16 or 8 × 8 × 8 f16 products into f32");
        return;
    };
    let mut rng = Rng::new(21);
    check_coop(ctx, &mut rng);
    check_coop(&own_gpu_coop_wide_tiles().expect("a context with cooperative matrices"), &mut rng);
    // workgroups sized for other subgroups than the adapter's (a subgroup's blocks in turn,
    // blocks computed by several subgroups), through LoRA's masked term's two phases
    for other in coop_contexts_sized_otherwise() {
        let ctx = &other;
        check_on(ctx, MatmulKind::Forward, MatmulTiling::Coop, MatmulDims::new(70, 130, 200), Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
        check_low_rank(ctx, MatmulKind::BackwardInput, MatmulTiling::Coop, MatmulDims::new(37, 52, 24), Accumulate { alpha: 0.5, beta: 1.0 }, 8, (0.5, 7), &mut rng);
    }
}

/// matmul_coop.wgsl with each stage's values loaded a stage ahead (`with_coop_prefetch`,
/// PREFETCH), where the adapter offers cooperative matrices: the launches in tiles of 64 take
/// the "a stage ahead" variant (those of 128 stage in turn) and write the very bits the
/// default (each stage loaded in turn) writes, over stages inside the operands and at their
/// edges, in all three layouts, batched and split; and they pass
/// coop_matmul_matches_cpu_where_offered's checks against the CPU (A in blocks, low-rank terms
/// through their dropout too), in workgroups sized for other subgroups too.
#[test]
fn coop_matmul_a_stage_ahead_matches_in_turn_where_offered() {
    use hearth_core::gpu::TileChoice;
    let Some(shape) = gpu_coop().and_then(|c| c.coop_shape()) else {
        eprintln!("SKIPPED: this adapter has no cooperative matrices of 16 × 16 × 16 or 8 × 8 × 8 f16 products into f32");
        return;
    };
    let mut rng = Rng::new(23);
    for side in [64, 128] {
        let tiles = TileChoice { side: Some(side), ..Default::default() };
        let in_turn = own_gpu_coop_matmuls().expect("a context with cooperative matrices").with_tile_choice(tiles);
        let ahead = own_gpu_coop_matmuls().expect("a context with cooperative matrices").with_tile_choice(tiles).with_coop_prefetch(true);
        let shapes = [
            (MatmulKind::Forward, MatmulDims::new(260, 200, 100)),
            (MatmulKind::Forward, MatmulDims::new(70, 130, 200)),
            (MatmulKind::BackwardInput, MatmulDims::new(260, 100, 200)),
            (MatmulKind::BackwardWeight, MatmulDims::new(100, 260, 200)),
            (MatmulKind::Forward, MatmulDims { batch: 3, b_batched: true, ..MatmulDims::new(70, 33, 48) }),
            (MatmulKind::Forward, MatmulDims::new(8, 40, 5000)),
        ];
        ahead.profile_begin();
        for (kind, d) in shapes {
            let (a_len, b_len, c_len) = kind.operand_lens(&d);
            let bb = if d.b_batched { d.batch } else { 1 };
            let a = to_f16(rng.vec_uniform(d.batch * a_len, -1.0, 1.0));
            let b = to_f16(rng.vec_uniform(bb * b_len, -1.0, 1.0));
            let prior = rng.vec_uniform(d.batch * c_len, -1.0, 1.0);
            let acc = Accumulate { alpha: 0.5, beta: 1.0 };
            let outputs = [&in_turn, &ahead].map(|ctx| {
                let out = upload(ctx, &prior);
                matmul_with(ctx, kind, MatmulTiling::Coop, &out, &upload(ctx, &a), &upload(ctx, &b), d, acc).unwrap();
                read(ctx, &out)
            });
            let differ = outputs[0].iter().zip(&outputs[1]).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(differ, 0, "{kind:?} {d:?} in tiles of {side}: {differ} of {} values differ from the stages loaded in turn", outputs[0].len());
        }
        let kernels = pollster::block_on(ahead.profile_end()).unwrap().kernels;
        // (tiles of 64 only, where a stage is at most 8 passes an invocation)
        let wanted = side == 64 && shape.invocations() >= 64;
        assert!(kernels.keys().filter(|k| k.starts_with("matmul_coop:")).all(|k| k.ends_with(", a stage ahead]") == wanted), "tiles of {side}, {shape:?}: {kernels:?}");
        check_coop(&ahead, &mut rng);
    }
    // workgroups sized for other subgroups: a subgroup's blocks in turn, each a walk of its own
    // over the reduction (whose first stage is loaded anew, not the last walk's held one), and
    // a stage of fewer passes than an invocation takes
    for other in coop_contexts_sized_otherwise() {
        let ctx = &other.with_coop_prefetch(true);
        check_on(ctx, MatmulKind::Forward, MatmulTiling::Coop, MatmulDims::new(70, 130, 200), Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
        check_low_rank(ctx, MatmulKind::BackwardInput, MatmulTiling::Coop, MatmulDims::new(37, 52, 24), Accumulate { alpha: 0.5, beta: 1.0 }, 8, (0.5, 7), &mut rng);
    }
}

/// [`coop_matmul_matches_cpu_where_offered`]'s checks on one context.
fn check_coop(ctx: &hearth_core::GpuContext, rng: &mut Rng) {
    for _ in 0..6 {
        let d = random_dims(rng, false);
        check_on(ctx, MatmulKind::Forward, MatmulTiling::Coop, d, Accumulate::OVERWRITE, rng);
    }
    // stages inside both operands (matmul_coop.wgsl's stage without bounds, along r and across
    // the lines) beside the edges' stages, in tiles of 128 too
    for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
        let (m, n, k) = match kind {
            MatmulKind::Forward => (260, 200, 100),
            MatmulKind::BackwardInput => (260, 100, 200),
            MatmulKind::BackwardWeight => (100, 260, 200),
        };
        check_on(ctx, kind, MatmulTiling::Coop, MatmulDims::new(m, n, k), Accumulate { alpha: 0.5, beta: 1.0 }, rng);
    }
    let batched = MatmulDims { batch: 3, b_batched: true, ..MatmulDims::new(70, 33, 48) };
    check_on(ctx, MatmulKind::Forward, MatmulTiling::Coop, batched, Accumulate { alpha: 0.5, beta: 1.0 }, rng);
    check_on(ctx, MatmulKind::Forward, MatmulTiling::Coop, MatmulDims::new(8, 40, 5000), Accumulate { alpha: 2.0, beta: -1.0 }, rng);
    // LoRA's h·Bᵀ added after the reduction (matmul_coop_low_rank.wgsl)
    for (d, rank) in [(MatmulDims::new(37, 24, 52), 8), (MatmulDims::new(130, 72, 36), 13), (MatmulDims::new(10, 12, 3000), 16)] {
        check_low_rank(ctx, MatmulKind::Forward, MatmulTiling::Coop, d, Accumulate { alpha: 0.5, beta: 1.0 }, rank, (0.0, 0), rng);
    }
    // input gradients: their rows scaled (pieces/row_scales.wgsl), LoRA's dropout(dh·A) after
    // the product, the parts' gradients and dh's in blocks
    for _ in 0..3 {
        check_on(ctx, MatmulKind::BackwardInput, MatmulTiling::Coop, random_dims(rng, false), Accumulate { alpha: 0.5, beta: 1.0 }, rng);
    }
    for (d, rank) in [(MatmulDims::new(37, 52, 24), 8), (MatmulDims::new(10, 3000, 12), 16)] {
        check_low_rank(ctx, MatmulKind::BackwardInput, MatmulTiling::Coop, d, Accumulate { alpha: 0.5, beta: 1.0 }, rank, (0.5, 7), rng);
    }
    check_small_input_gradients(ctx, MatmulTiling::Coop, rng);
    check_input_gradient_in_blocks(ctx, MatmulTiling::Coop, rng);
    // a weight gradient's layout (the launchers keep those in f32, but the kernel takes it):
    // A staged along its rows
    check_on(ctx, MatmulKind::BackwardWeight, MatmulTiling::Coop, random_dims(rng, false), Accumulate { alpha: 0.5, beta: 1.0 }, rng);
}

/// matmul_tiled_f16.wgsl (the tiled kernel with its tiles in f16), where the adapter has
/// shader-f16 (lavapipe has; SwiftShader has not, and refuses it): all three layouts (the launchers use it for forwards and input gradients) on random
/// shapes off the tiles, batched, accumulating, over a reduction long enough to split, with
/// LoRA's term and its dropout, with dropout on an input; and inputs past f16's range
/// saturate at ±65504.
#[test]
fn f16_tiles_match_cpu_where_offered() {
    with_gpu!(ctx => {
        if !ctx.has_f16() {
            // refused with a reason, not a failed pipeline (SwiftShader)
            let buf = upload(ctx, &[0.0; 16]);
            let err = matmul_with(ctx, MatmulKind::Forward, MatmulTiling::TiledF16, &buf, &buf, &buf, MatmulDims::new(4, 4, 4), Accumulate::OVERWRITE).unwrap_err();
            assert!(err.to_string().contains("shader-f16"), "{err}");
            eprintln!("SKIPPED: this adapter has no shader-f16 (the f16 tiles were refused)");
            return;
        }
        let mut rng = Rng::new(33);
        let acc = Accumulate { alpha: 0.5, beta: 1.0 };
        for tiling in [MatmulTiling::TiledF16, MatmulTiling::TiledWideF16] {
            for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
                for _ in 0..3 {
                    check_on(ctx, kind, tiling, random_dims(&mut rng, false), acc, &mut rng);
                }
            }
            let batched = MatmulDims { batch: 3, b_batched: true, ..MatmulDims::new(70, 33, 48) };
            check_on(ctx, MatmulKind::Forward, tiling, batched, Accumulate::OVERWRITE, &mut rng);
            check_on(ctx, MatmulKind::Forward, tiling, MatmulDims::new(8, 40, 5000), Accumulate { alpha: 2.0, beta: -1.0 }, &mut rng);
            for (d, rank) in [(MatmulDims::new(37, 24, 52), 8), (MatmulDims::new(130, 72, 36), 13)] {
                check_low_rank(ctx, MatmulKind::Forward, tiling, d, acc, rank, (0.0, 0), &mut rng);
                check_low_rank(ctx, MatmulKind::BackwardInput, tiling, d, acc, rank, (0.5, 7), &mut rng);
            }
            let drop = OperandDropout { on: DropOn::A, p: 0.5, seed: 4 };
            check_dropout(ctx, MatmulKind::Forward, tiling, MatmulDims::new(45, 70, 33), acc, drop, &mut rng);
            // 1e5 stages as 65504 (f16's largest), not inf
            let (x, w, y) = (upload(ctx, &[1e5, 0.0, 0.0, -1e5]), upload(ctx, &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), poisoned(ctx, 2));
            matmul_with(ctx, MatmulKind::Forward, tiling, &y, &x, &w, MatmulDims::new(1, 2, 4), Accumulate::OVERWRITE).unwrap();
            assert_eq!(read(ctx, &y), [65504.0, -65504.0], "{tiling:?}");
        }
    });
}

/// Input gradients in f16 tiles scale each row of the output gradient, and of LoRA's dh,
/// by a power of two before rounding it (pieces/row_scales.wgsl): rows of magnitudes from
/// 1e-9 to 1e5 ([`GRADIENT_ROW_MAGNITUDES`]) come out within f16's rounding of both operands,
/// 1.5e-3 of Σ|products| (2·2^-11 per product, and the f32 sums), for a product alone, split
/// over a long reduction, and with LoRA's term with and without its dropout (and, on inputs
/// in f16, in blocks). Rounded as they are, the rows below 6e-8 would come out 0 and those
/// past 65504 saturated.
#[test]
fn f16_tiles_keep_small_input_gradients() {
    with_gpu!(ctx => {
        if !ctx.has_f16() {
            eprintln!("SKIPPED: this adapter has no shader-f16");
            return;
        }
        let mut rng = Rng::new(47);
        for tiling in [MatmulTiling::TiledF16, MatmulTiling::TiledWideF16] {
            check_small_input_gradients(ctx, tiling, &mut rng);
            check_input_gradient_in_blocks(ctx, tiling, &mut rng);
        }
    });
}

/// [`f16_tiles_keep_small_input_gradients`]'s checks on `tiling`.
fn check_small_input_gradients(ctx: &hearth_core::GpuContext, tiling: MatmulTiling, rng: &mut Rng) {
    let acc = Accumulate { alpha: 0.5, beta: 0.0 };
    let abs = |v: &[f32]| -> Vec<f32> { v.iter().map(|x| x.abs()).collect() };
    // (the last: each row with one value a thousand times its others somewhere along it, over
    // a reduction split into parts of some 2,560 steps, which pieces/row_scales.wgsl reads
    // eight times the workgroup's invocations at a time: a row's scale must come from all its
    // steps, or that value saturates at f16's largest)
    for (d, rank, dropout, spikes) in [
        (MatmulDims::new(70, 96, 40), 0, (0.0, 0), false),
        (MatmulDims::new(8, 5000, 40), 0, (0.0, 0), false),
        (MatmulDims::new(37, 52, 24), 8, (0.0, 0), false),
        (MatmulDims::new(130, 36, 72), 13, (0.5, 7), false),
        (MatmulDims::new(8, 40 * 4096, 40), 0, (0.0, 0), true),
    ] {
        let (m, n, k) = (d.m, d.n, d.k);
        let mut dy = rows_at_magnitudes(rng.vec_uniform(m * n, -1.0, 1.0), n);
        if spikes {
            for row in dy.chunks_mut(n) {
                let at = rng.below(n);
                row[at] = 1000.0 * row.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            }
        }
        let w = rng.vec_uniform(n * k, -1.0, 1.0);
        // dh's rows 3 magnitudes on from dy's: the scale of a row is the larger's
        let dh = rows_at_magnitudes(rng.vec_uniform((m + 3) * rank, -1.0, 1.0), rank)[3 * rank..].to_vec();
        let lora_a = rng.vec_uniform(rank * k, -1.0, 1.0);
        let out = poisoned(ctx, m * k);
        let (hb, vb) = (upload(ctx, &dh), upload(ctx, &lora_a));
        let (dyb, wb) = (upload(ctx, &dy), upload(ctx, &w));
        let scale = 1.75;
        if rank == 0 {
            matmul_with(ctx, MatmulKind::BackwardInput, tiling, &out, &dyb, &wb, d, acc).unwrap();
        } else {
            let term = LowRankTerm { h: &hb, v: &vb, rank, scale, dropout, layout: TermLayout::Rows };
            matmul_low_rank_with(ctx, MatmulKind::BackwardInput, tiling, &out, &dyb, &wb, d, acc, term).unwrap();
        }
        let term_dims = MatmulDims::new(m, rank, k);
        let mut masked = vec![0.0; m * k];
        cpu::dropout_forward(&mut masked, &reference(MatmulKind::BackwardInput, &dh, &lora_a, &term_dims), dropout.0, dropout.1, 0.0);
        let product = reference(MatmulKind::BackwardInput, &dy, &w, &d);
        let want: Vec<f64> = (0..m * k).map(|i| 0.5 * (product[i] + scale as f64 * masked[i])).collect();
        let sizes = reference(MatmulKind::BackwardInput, &abs(&dy), &abs(&w), &d);
        let term_sizes = reference(MatmulKind::BackwardInput, &abs(&dh), &abs(&lora_a), &term_dims);
        let bound: Vec<f64> = (0..m * k).map(|i| 0.5 * (sizes[i] + scale as f64 * term_sizes[i] / (1.0 - dropout.0 as f64))).collect();
        let what = format!("{tiling:?} {d:?} + rank {rank} term, dropout {dropout:?}");
        assert_within_products(&what, &read(ctx, &out), &want, &bound, 1.5e-3);
    }
}

/// The input gradient of a stacked weight from its parts' gradients in blocks, with LoRA's
/// term in blocks and its dropout, on `tiling` (the strided GEMM kernels), inputs rounded to
/// f16 where it rounds them (and a term scale of 2, exact in f16, since V is staged scaled):
/// against the CPU on the dense matrices.
fn check_input_gradient_in_blocks(ctx: &hearth_core::GpuContext, tiling: MatmulTiling, rng: &mut Rng) {
    let round = |v: Vec<f32>| -> Vec<f32> { if tiling.rounds_to_f16() { to_f16(v) } else { v } };
    let (m, widths, k) = (70, [48, 16, 16], 52);
    let n: usize = widths.iter().sum();
    let (rank, count) = (4, widths.len());
    let dense = round(rng.vec_uniform(m * n, -1.0, 1.0));
    let (a, blocks) = in_blocks(&dense, m, &widths, 5);
    let w = round(rng.vec_uniform(n * k, -1.0, 1.0));
    let h_dense = round(rng.vec_uniform(m * count * rank, -1.0, 1.0));
    let (h, h_blocks) = in_blocks(&h_dense, m, &vec![rank; count], 3);
    let v = round(rng.vec_uniform(count * rank * k, -1.0, 1.0));
    let (ab, wb, hb, vb) = (upload(ctx, &a), upload(ctx, &w), upload(ctx, &h), upload(ctx, &v));
    let prior = rng.vec_uniform(m * k, -1.0, 1.0);
    let out = upload(ctx, &prior);
    let dropout = (0.3, 9);
    let layout = TermLayout::Blocks(ColumnBlocks::new(&h_blocks).unwrap());
    let term = LowRankTerm { h: &hb, v: &vb, rank: count * rank, scale: 2.0, dropout, layout };
    let d = MatmulDims { a_blocks: Some(ColumnBlocks::new(&blocks).unwrap()), ..MatmulDims::new(m, n, k) };
    matmul_low_rank_with(ctx, MatmulKind::BackwardInput, tiling, &out, &ab, &wb, d, Accumulate { alpha: 1.0, beta: 0.5 }, term).unwrap();
    let product = reference(MatmulKind::BackwardInput, &dense, &w, &MatmulDims::new(m, n, k));
    let mut extra = vec![0.0; m * k];
    cpu::dropout_forward(&mut extra, &reference(MatmulKind::BackwardInput, &h_dense, &v, &MatmulDims::new(m, count * rank, k)), dropout.0, dropout.1, 0.0);
    let want: Vec<f64> = (0..m * k).map(|i| product[i] + 2.0 * extra[i] + 0.5 * prior[i] as f64).collect();
    assert_close(&format!("{tiling:?} {m}×{widths:?}×{k} in blocks, term in blocks, dropout {dropout:?}"), &read(ctx, &out), &want, ATOL, 4e-4);
}

/// `bench ops`' kernels on cooperative matrices compute what they claim, so that their rates
/// count real products. "peak coop": each block's 8 products over a few rounds (exact: small
/// multiples of 1/64), each workgroup's own matrices, on the adapter's workgroups and on those
/// sized for narrower and wider subgroups (blocks computed twice over, blocks in turn). The
/// forward's probe: the first stage's product once per iteration (several tiles, partial ones
/// at both edges, a reduction that ends inside a stage); a reduction shorter than a stage is
/// refused.
#[test]
fn coop_bench_kernels_match_cpu_where_offered() {
    let Some(ctx) = gpu_coop() else {
        eprintln!("SKIPPED: this adapter has no cooperative matrices of 16 × 16 × 16 or 8 × 8 × 8 f16 products into f32");
        return;
    };
    let others = coop_contexts_sized_otherwise();
    for ctx in std::iter::once(ctx).chain(others.iter().step_by(2)) {
        let side = ctx.coop_shape().unwrap().side as usize;
        for (groups, iters) in [(1, 0), (1, 1), (3, 5), (5, 37)] {
            let n = groups * fma_peak::fma_peak_coop_outputs(side);
            let out = poisoned(ctx, n);
            fma_peak::fma_peak_coop(ctx, &out, groups, iters).unwrap();
            let mut want = vec![0.0; n];
            cpu::fma_peak_coop(&mut want, side, iters);
            let sized_for = ctx.coop_shape().unwrap().sized_for;
            assert_close(&format!("fma_peak_coop {groups} workgroups, {iters} rounds, sized for subgroups of {sized_for}"), &read(ctx, &out), &want, 1e-9, 0.0);
        }
    }
    let mut rng = Rng::new(37);
    for (m, n, k) in [(300, 140, 70), (129, 130, 32), (64, 200, 96)] {
        let d = MatmulDims::new(m, n, k);
        let (x, w) = (to_f16(rng.vec_uniform(m * k, -1.0, 1.0)), to_f16(rng.vec_uniform(n * k, -1.0, 1.0)));
        let out = poisoned(ctx, m * n);
        matmul_coop_probe(ctx, &out, &upload(ctx, &x), &upload(ctx, &w), d).unwrap();
        let iterations = k.div_ceil(32) as f64;
        assert_close(&format!("matmul_coop_probe {d:?}"), &read(ctx, &out), &probe_reference(&x, &w, d, 32), ATOL * iterations, RTOL);
    }
    let (x, w, out) = (upload(ctx, &[0.0; 124]), upload(ctx, &[0.0; 124]), poisoned(ctx, 16));
    let err = matmul_coop_probe(ctx, &out, &x, &w, MatmulDims::new(4, 4, 31)).unwrap_err().to_string();
    assert!(err.contains("K ≥ 32"), "{err}");
}

#[test]
fn coop_matmul_is_refused_without_cooperative_matrices() {
    with_gpu!(ctx => {
        if ctx.has_cooperative_matrix() {
            return;
        }
        let buf = upload(ctx, &[0.0; 16]);
        let err = matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Coop, &buf, &buf, &buf, MatmulDims::new(4, 4, 4), Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("no cooperative matrices"), "{err}");
    });
}

/// Random shapes; the vec4 dimensions stay multiples of 4 for the register tiling.
fn random_dims(rng: &mut Rng, vec4: bool) -> MatmulDims {
    let pick = |rng: &mut Rng, hi: usize| 1 + rng.below(hi);
    let round = |x: usize| if vec4 { x.next_multiple_of(4) } else { x };
    MatmulDims::new(pick(rng, 150), round(pick(rng, 150)), round(pick(rng, 300)))
}

#[test]
fn matmul_random_shapes_every_tiling() {
    let mut rng = Rng::new(7);
    for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
        for round in 0..4 {
            let d = random_dims(&mut rng, true);
            let acc = if round % 2 == 0 { Accumulate::OVERWRITE } else { Accumulate { alpha: 0.5, beta: 1.0 } };
            for tiling in MatmulTiling::ALL {
                check(kind, tiling, d, acc, &mut rng);
            }
            let odd = random_dims(&mut rng, false);
            check(kind, MatmulTiling::Tiled, odd, acc, &mut rng);
            check(kind, MatmulTiling::TiledWide, odd, acc, &mut rng);
        }
    }
}

/// Outputs of at most 32 columns (LoRA's x·Aᵀ, dh and dB: the rank wide) in tiles of 64 rows
/// by 32 columns, 8 × 4 outputs an invocation (THIN_COLUMNS), in f32 and f16 tiles, values
/// loaded ahead and in turn: forwards and both gradients off the tiles, over reductions that
/// split and end inside a stage, batched, with a low-rank term and dropout; 33 columns in
/// tiles of 64 × 64.
#[test]
fn thin_outputs_take_tiles_of_32_columns() {
    use hearth_core::gpu::{KernelPaths, TileChoice};
    let mut rng = Rng::new(47);
    for prefetch in [true, false] {
        let Some(own) = own_gpu() else { return };
        let ctx = &own.with_kernel_paths(KernelPaths::Gpu).with_tile_choice(TileChoice { side: Some(64), prefetch: Some(prefetch), ..Default::default() });
        for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
            // (the output's columns: n for a forward, k for the gradients)
            for (m, cols, r) in [(300, 16, 37), (70, 32, 1100), (129, 1, 200), (10, 31, 3000)] {
                let d = match kind {
                    MatmulKind::Forward => MatmulDims::new(m, cols, r),
                    MatmulKind::BackwardInput => MatmulDims::new(m, r, cols),
                    MatmulKind::BackwardWeight => MatmulDims::new(r, m, cols),
                };
                ctx.profile_begin();
                check_on(ctx, kind, MatmulTiling::Tiled, d, Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
                if ctx.has_f16() && kind != MatmulKind::BackwardWeight {
                    check_on(ctx, kind, MatmulTiling::TiledF16, d, Accumulate::OVERWRITE, &mut rng);
                }
                let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
                let thin = if prefetch { "[64x32]" } else { "[64x32, loaded in turn]" };
                assert!(kernels.keys().filter(|k| k.contains(":matmul_tiled [")).all(|k| k.ends_with(thin)), "{kind:?} {d:?}: {kernels:?}");
            }
            let batched = MatmulDims { batch: 3, b_batched: true, ..MatmulDims::new(70, 20, 24) };
            check_on(ctx, kind, MatmulTiling::Tiled, batched, Accumulate::OVERWRITE, &mut rng);
            if kind != MatmulKind::BackwardWeight {
                let dropout = if kind == MatmulKind::Forward { (0.0, 0) } else { (0.3, 7) };
                check_low_rank(ctx, kind, MatmulTiling::Tiled, MatmulDims::new(130, 24, 20), Accumulate::OVERWRITE, 5, dropout, &mut rng);
            }
        }
        ctx.profile_begin();
        check_on(ctx, MatmulKind::Forward, MatmulTiling::Tiled, MatmulDims::new(70, 33, 40), Accumulate::OVERWRITE, &mut rng);
        let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
        assert!(kernels.keys().any(|k| k.starts_with("matmul_tiled:matmul_tiled [64x64")), "33 columns: {kernels:?}");
    }
}

#[test]
fn thin_outputs_split_as_their_own_choice_says() {
    // The launches in thin tiles (LoRA's x·Aᵀ and dh, the rank wide) split their reductions as
    // the thin tiles' choice says (TileChoice::thin_split, tuned apart: towards more
    // workgroups in shorter parts), every other launch as the others' choice. On the H100's
    // tuning (256 workgroups, parts of 64 steps) with a thin split towards 1024 in parts of 16:
    // x·Aᵀ of o (32 tiles over 576 steps) in 24 parts of 24 steps (32 parts rounded up to whole
    // stages cover it in 24), of q, k and v together (96 tiles) in 9, of down in 32; a
    // 576-wide output in tiles of 128 and a 64-wide one in tiles of 64 as the others split.
    use hearth_core::gpu::{KernelPaths, TileChoice};
    use hearth_core::ops::matmul::{f32_tile, forward_splits, split_choice_for};
    let h100 = TileChoice { split_workgroups: Some(256), split_min_steps: Some(64), thin_split: Some((1024, 16)), ..Default::default() };
    for ((m, n, k, batch), side, parts) in [((2048, 16, 576, 1), 64, 24), ((2048, 16, 576, 3), 64, 9), ((2048, 16, 1536, 1), 64, 32), ((2048, 576, 576, 1), 128, 3), ((2048, 64, 576, 1), 64, 8)] {
        assert_eq!(forward_splits(m, n, k, batch, side, split_choice_for(h100, f32_tile(side, n))), parts, "{batch} × {m} × {n} × {k} in tiles of {side}");
    }
    // On lavapipe: the others' split never splits (towards 2 workgroups), the thin one does;
    // forwards and input gradients, one and a batch of 3, their sums against the CPU's.
    let mut rng = Rng::new(53);
    let Some(own) = own_gpu() else { return };
    let ctx = &own.with_kernel_paths(KernelPaths::Gpu).with_tile_choice(TileChoice { side: Some(64), split_workgroups: Some(2), thin_split: Some((64, 16)), ..Default::default() });
    for kind in [MatmulKind::Forward, MatmulKind::BackwardInput] {
        for (m, cols, r, batch, splits) in [(300, 16, 600, 1, true), (130, 24, 1100, 3, true), (300, 40, 600, 1, false)] {
            let d = match kind {
                MatmulKind::Forward => MatmulDims { batch, b_batched: batch > 1, ..MatmulDims::new(m, cols, r) },
                _ => MatmulDims { batch, b_batched: batch > 1, ..MatmulDims::new(m, r, cols) },
            };
            ctx.profile_begin();
            check_on(ctx, kind, MatmulTiling::Tiled, d, Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
            let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
            assert_eq!(kernels.keys().any(|k| k.contains("matmul_sum_splits")), splits, "{kind:?} {d:?}: {kernels:?}");
        }
    }
}

#[test]
fn matmul_register_spans_several_workgroups() {
    // A register workgroup covers 256 rows × 256 columns (the narrow one 128 rows × 16
    // columns, its row blocks on x); these shapes need several, with partial blocks at both
    // edges, and outputs of 4 to 16 columns (LoRA's rank side).
    let mut rng = Rng::new(8);
    for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
        for (m, n, k) in [(300, 264, 36), (70, 520, 260), (513, 4, 4), (300, 16, 16), (513, 12, 40), (260, 40, 8)] {
            for tiling in [MatmulTiling::Register, MatmulTiling::RegisterNarrow] {
                check(kind, tiling, MatmulDims::new(m, n, k), Accumulate::OVERWRITE, &mut rng);
            }
        }
    }
}

#[test]
fn matmul_tiled_spans_several_workgroups() {
    // Tiles of 64 and 128 outputs a side, staged 8 reduction steps at a time: several tiles
    // with partial ones at both edges, and reductions that end inside a stage.
    let mut rng = Rng::new(11);
    for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
        for (m, n, k) in [(300, 270, 37), (129, 520, 9), (513, 5, 130)] {
            for tiling in [MatmulTiling::Tiled, MatmulTiling::TiledWide] {
                check(kind, tiling, MatmulDims::new(m, n, k), Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
            }
        }
    }
}

/// What a probe of the forward (x M × K, w N × K) computes where it stages `steps` reduction
/// steps an iteration: the first stage's product once per iteration, ⌈K/steps⌉ times.
fn probe_reference(x: &[f32], w: &[f32], d: MatmulDims, steps: usize) -> Vec<f64> {
    let first_stage = |v: &[f32], rows: usize| -> Vec<f64> { (0..rows).flat_map(|i| to_f64(&v[i * d.k..i * d.k + steps])).collect() };
    let mut stage = vec![0.0; d.m * d.n];
    cpu::matmul_forward(&mut stage, &first_stage(x, d.m), &first_stage(w, d.n), d.m, d.n, steps);
    let iterations = d.k.div_ceil(steps) as f64;
    stage.iter().map(|v| v * iterations).collect()
}

/// bench ops' probes (TileProbe): the forward's arithmetic on the first 8 steps' tiles, once
/// per iteration (several tiles, partial ones at both edges, a reduction that ends inside a
/// stage); a reduction shorter than a stage is refused.
#[test]
fn tile_probes_sum_the_first_stage_once_per_iteration() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(31);
        for probe in TileProbe::ALL {
            for (m, n, k) in [(300, 270, 37), (129, 130, 8), (64, 200, 64)] {
                let d = MatmulDims::new(m, n, k);
                let (x, w) = (rng.vec_uniform(m * k, -1.0, 1.0), rng.vec_uniform(n * k, -1.0, 1.0));
                let out = poisoned(ctx, m * n);
                matmul_tiled_probe(ctx, probe, &out, &upload(ctx, &x), &upload(ctx, &w), d).unwrap();
                let iterations = k.div_ceil(8) as f64;
                assert_close(&format!("{probe:?} {d:?}"), &read(ctx, &out), &probe_reference(&x, &w, d, 8), ATOL * iterations, RTOL);
            }
        }
        let (x, w, out) = (upload(ctx, &[0.0; 28]), upload(ctx, &[0.0; 28]), poisoned(ctx, 16));
        let err = matmul_tiled_probe(ctx, TileProbe::SumsOnly, &out, &x, &w, MatmulDims::new(4, 4, 7)).unwrap_err().to_string();
        assert!(err.contains("K ≥ 8"), "{err}");
    });
}

#[test]
fn matmul_tiled_splits_long_reductions() {
    // Outputs of one tile over reductions of thousands of steps (LoRA's weight gradients), and
    // a reduction longer than one workgroup may take over many tiles (260 × 520 × 5000): the
    // reduction is split into parts and summed, with alpha and beta applied once.
    let mut rng = Rng::new(12);
    for (kind, m, n, k) in [(MatmulKind::BackwardWeight, 2000, 12, 20), (MatmulKind::Forward, 10, 12, 3000), (MatmulKind::BackwardInput, 9, 2600, 20), (MatmulKind::BackwardWeight, 1030, 70, 130), (MatmulKind::Forward, 260, 520, 5000)] {
        for acc in [Accumulate::OVERWRITE, Accumulate { alpha: 0.5, beta: 1.0 }] {
            for tiling in [MatmulTiling::Tiled, MatmulTiling::TiledWide] {
                check(kind, tiling, MatmulDims::new(m, n, k), acc, &mut rng);
            }
        }
    }
    // a batch's reductions split alike, also past the longest a workgroup takes
    for (kind, m, n, k) in [(MatmulKind::Forward, 10, 12, 3000), (MatmulKind::Forward, 70, 20, 5000), (MatmulKind::BackwardInput, 9, 2600, 20)] {
        let d = MatmulDims { batch: 3, b_batched: kind == MatmulKind::Forward, ..MatmulDims::new(m, n, k) };
        check(kind, MatmulTiling::Tiled, d, Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
    }
    // where the longest part asks for more parts than the workgroups a split aims for hold (5
    // parts of at most 4,096 steps, towards 4 workgroups of one tile), whole rounds of them: 8
    use hearth_core::gpu::{KernelPaths, TileChoice};
    use hearth_core::ops::matmul::forward_splits;
    assert_eq!(forward_splits(70, 40, 16400, 1, 128, (4, 256)), 8);
    if let Some(own) = own_gpu() {
        let ctx = &own.with_kernel_paths(KernelPaths::Gpu).with_tile_choice(TileChoice { split_workgroups: Some(4), ..Default::default() });
        check_on(ctx, MatmulKind::BackwardInput, MatmulTiling::TiledWide, MatmulDims::new(70, 16400, 40), Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
    }
    with_gpu!(ctx => {
        // the split path ran: its summing pass is among the launches
        let (m, n, k) = (2000, 12, 20);
        ctx.profile_begin();
        let out = upload(ctx, &vec![0.0; n * k]);
        matmul_with(ctx, MatmulKind::BackwardWeight, MatmulTiling::Tiled, &out, &upload(ctx, &vec![1.0; m * n]), &upload(ctx, &vec![1.0; m * k]), MatmulDims::new(m, n, k), Accumulate::OVERWRITE).unwrap();
        let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
        assert!(kernels.keys().any(|name| name.contains("matmul_sum_splits")), "{kernels:?}");
        assert_eq!(read(ctx, &out), vec![m as f32; n * k]);
    });
}

#[test]
fn matmul_gemv_for_decoding_rows() {
    // 1 to 16 rows of x (decoding; each count of fours), reductions that are not multiples of
    // the workgroup, and
    // more columns than one grid dimension holds (the lm_head of a large vocabulary).
    // (each reduction variant: on subgroup operations where the adapter has them, and in
    // workgroup memory)
    let mut rng = Rng::new(13);
    with_each_reduction!(ctx => {
        for (m, n, k) in [(1, 1, 1), (1, 70, 576), (2, 33, 100), (3, 129, 64), (4, 576, 1536), (5, 40, 96), (8, 70, 576), (11, 33, 100), (16, 129, 200), (1, 70000, 8), (13, 70000, 8)] {
            for acc in [Accumulate::OVERWRITE, Accumulate { alpha: 0.5, beta: 1.0 }] {
                check_on(ctx, MatmulKind::Forward, MatmulTiling::Gemv, MatmulDims::new(m, n, k), acc, &mut rng);
            }
        }
    });
    with_each_reduction!(ctx => {
        let err = matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Gemv, &upload(ctx, &[0.0; 17 * 4]), &upload(ctx, &[0.0; 17 * 8]), &upload(ctx, &[0.0; 4 * 8]), MatmulDims::new(17, 4, 8), Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("1 to 16 rows"), "{err}");
        // LoRA's h·Bᵀ in the same launch (decoding with an adapter), over ranks of fewer and
        // more than the workgroup's 64 invocations
        for (m, n, k) in [(1, 70, 576), (4, 33, 100), (2, 70000, 8), (9, 33, 100), (16, 70, 64)] {
            for rank in [1, 16, 70] {
                for acc in [Accumulate::OVERWRITE, Accumulate { alpha: 0.5, beta: 1.0 }] {
                    check_low_rank(ctx, MatmulKind::Forward, MatmulTiling::Gemv, MatmulDims::new(m, n, k), acc, rank, (0.0, 0), &mut rng);
                }
            }
        }
    });
    // in one launch (counted on a context of its own: the shared one runs other tests' too)
    let Some(own) = own_gpu() else { return };
    own.profile_begin();
    check_low_rank(&own, MatmulKind::Forward, MatmulTiling::Gemv, MatmulDims::new(1, 70, 576), Accumulate::OVERWRITE, 16, (0.0, 0), &mut rng);
    let profile = pollster::block_on(own.profile_end()).unwrap();
    assert_eq!(profile.kernels.values().map(|k| k.launches).sum::<u64>(), 1, "{:?}", profile.kernels);
}

#[test]
fn matmul_gemv_gated_is_both_products_and_the_activation() {
    // decoding's gated MLP in one launch: 1 to 16 rows, both activations, reductions off the
    // workgroup's 64, more columns than one grid dimension holds (on a context of its own, so
    // that its launches are counted alone, the file it runs from named: each reduction
    // variant's)
    for own in hearth_tests::own_gpu_each_reduction() {
        let ctx = &own;
        let mut rng = Rng::new(14);
        for act in [Activation::Silu, Activation::GeluTanh] {
            for (m, n, k) in [(1, 96, 64), (4, 33, 100), (2, 1536, 576), (7, 96, 64), (16, 33, 100), (1, 70000, 8)] {
                let (x, w) = (rng.vec_uniform(m * k, -1.0, 1.0), rng.vec_uniform(2 * n * k, -1.0, 1.0));
                let out = poisoned(ctx, m * n);
                ctx.profile_begin();
                matmul_gemv_gated(ctx, act, &out, &upload(ctx, &x), &upload(ctx, &w), MatmulDims::new(m, n, k), None, None).unwrap();
                let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
                assert_eq!(kernels.values().map(|k| k.launches).sum::<u64>(), 1);
                assert!(kernels.keys().all(|name| name.contains("_subgroups:") == ctx.subgroup_reductions()), "{kernels:?}");
                assert_close(&format!("{act:?} {m}×{n}×{k}"), &read(ctx, &out), &gated_reference(act == Activation::GeluTanh, &to_f64(&x), &w, m, n, k, None), ATOL, RTOL);
            }
        }
        let buf = upload(ctx, &[0.0; 17 * 16]);
        let err = matmul_gemv_gated(ctx, Activation::Silu, &buf, &buf, &buf, MatmulDims::new(17, 4, 4), None, None).unwrap_err();
        assert!(err.to_string().contains("1 to 16 rows"), "{err}");
        let err = matmul_gemv_gated(ctx, Activation::Silu, &buf, &buf, &upload(ctx, &[0.0; 16]), MatmulDims::new(1, 4, 4), None, None).unwrap_err();
        assert!(err.to_string().contains("w holds 16 values, expected at least 32"), "{err}");
    }
}

#[test]
fn matmul_gemv_normed_is_the_norm_then_the_product() {
    // decoding's norms before q/k/v and before gate/up inside the matrix-vector launch: 1 to 16
    // rows of a residual stream (values far from unit RMS, so that the norm matters), the
    // plain and the gated kernel, reductions off the workgroup's 64, more columns than one
    // grid dimension holds (on a context of its own: one launch each)
    for own in hearth_tests::own_gpu_each_reduction() {
        let ctx = &own;
        let mut rng = Rng::new(31);
        let eps = 1e-5;
        let one_launch = |what: &str, run: &dyn Fn()| {
            ctx.profile_begin();
            run();
            let launches: u64 = pollster::block_on(ctx.profile_end()).unwrap().kernels.values().map(|k| k.launches).sum();
            assert_eq!(launches, 1, "{what}");
        };
        for (m, n, k) in [(1, 96, 64), (4, 33, 100), (2, 1536, 576), (12, 96, 64), (15, 33, 100), (1, 70000, 8)] {
            let (x, nw, w) = (rng.vec_uniform(m * k, -3.0, 3.0), rng.vec_uniform(k, 0.5, 1.5), rng.vec_uniform(2 * n * k, -1.0, 1.0));
            let xn = rmsnorm_reference(&x, &nw, m, k, eps);
            let (xb, nwb, wb) = (upload(ctx, &x), upload(ctx, &nw), upload(ctx, &w));
            let norm = InputNorm { weight: &nwb, eps };
            // the plain kernel over the first n rows of w
            let out = poisoned(ctx, m * n);
            one_launch("normed", &|| matmul_gemv_normed(ctx, &out, &xb, &wb, MatmulDims::new(m, n, k), norm, None).unwrap());
            let mut want = vec![0.0; m * n];
            cpu::matmul_forward(&mut want, &xn, &to_f64(&w[..n * k]), m, n, k);
            assert_close(&format!("normed {m}×{n}×{k}"), &read(ctx, &out), &want, ATOL, RTOL);
            // the output in three blocks apart (q, k and v of a few tokens)
            let (blocks, layout, len) = three_blocks(m, n);
            let out = poisoned(ctx, len);
            one_launch("normed, out in blocks", &|| matmul_gemv_normed(ctx, &out, &xb, &wb, MatmulDims { c_blocks: Some(blocks), ..MatmulDims::new(m, n, k) }, norm, None).unwrap());
            assert_close(&format!("normed {m}×{n}×{k}, out in blocks"), &from_blocks(&read(ctx, &out), m, &layout), &want, ATOL, RTOL);
            for act in [Activation::Silu, Activation::GeluTanh] {
                let out = poisoned(ctx, m * n);
                one_launch("normed gated", &|| matmul_gemv_gated(ctx, act, &out, &xb, &wb, MatmulDims::new(m, n, k), Some(norm), None).unwrap());
                let want = gated_reference(act == Activation::GeluTanh, &xn, &w, m, n, k, None);
                assert_close(&format!("normed {act:?} {m}×{n}×{k}"), &read(ctx, &out), &want, ATOL, RTOL);
            }
        }
        let buf = upload(ctx, &[0.0; 64]);
        let err = matmul_gemv_normed(ctx, &buf, &buf, &buf, MatmulDims::new(1, 4, 8), InputNorm { weight: &upload(ctx, &[1.0; 4]), eps }, None).unwrap_err();
        assert!(err.to_string().contains("norm weight holds 4 values, expected at least 8"), "{err}");
    }
}

#[test]
fn matmul_ragged_sizes_fall_back_to_tiled() {
    with_gpu!(ctx => {
        let d = MatmulDims::new(33, 17, 12);
        let buf = upload(ctx, &[0.0; 33 * 17]);
        let x = upload(ctx, &[0.0; 33 * 12]);
        let w = upload(ctx, &[0.0; 17 * 12]);
        let err = matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Register, &buf, &x, &w, d, Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("multiples of 4"), "{err}");
        assert_eq!(hearth_core::ops::matmul::choose_tiling(ctx, MatmulKind::Forward, &d), MatmulTiling::Tiled);
    });
    let mut rng = Rng::new(10);
    check(MatmulKind::Forward, MatmulTiling::Tiled, MatmulDims::new(33, 17, 12), Accumulate::OVERWRITE, &mut rng);
}

#[test]
fn matmul_batched() {
    // A batched weight gradient (one per batch, as the attention's dK and dV are) needs b
    // batched too.
    let mut rng = Rng::new(9);
    for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
        for b_batched in [false, true] {
            if kind == MatmulKind::BackwardWeight && !b_batched {
                continue;
            }
            let d = MatmulDims { batch: 3, b_batched, ..MatmulDims::new(37, 20, 44) };
            for tiling in MatmulTiling::ALL {
                check(kind, tiling, d, Accumulate::OVERWRITE, &mut rng);
            }
        }
    }
    with_gpu!(ctx => {
        let d = MatmulDims { batch: 2, b_batched: false, ..MatmulDims::new(4, 4, 4) };
        let buf = upload(ctx, &[0.0; 32]);
        let err = matmul_with(ctx, MatmulKind::BackwardWeight, MatmulTiling::Register, &buf, &buf, &buf, d, Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("fold it into M"), "{err}");
    });
}

#[test]
fn matmul_rejects_wrong_sizes() {
    with_gpu!(ctx => {
        let small = upload(ctx, &[0.0; 8]);
        let err = hearth_core::ops::matmul::matmul(ctx, MatmulKind::Forward, &small, &small, &small,
            MatmulDims::new(4, 4, 4), Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("matmul_forward: a holds 8 values, expected at least 16"), "{err}");
    });
}

/// Dropout on each side of each product: fused into the tiled kernels (also through a split
/// reduction, where the sum applies the output's mask), and launched around the register
/// kernels; against the CPU with the mask of ops::cpu::dropout_keep at each value's flat
/// index in its buffer.
#[test]
fn matmul_dropout_on_each_side() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(31);
        let shapes = [MatmulDims::new(37, 24, 52), MatmulDims { batch: 2, b_batched: true, ..MatmulDims::new(9, 12, 16) }, MatmulDims::new(8, 12, 3000)];
        for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
            for d in shapes {
                if kind == MatmulKind::BackwardWeight && d.batch > 1 && !d.b_batched {
                    continue;
                }
                for on in [DropOn::A, DropOn::B, DropOn::Out] {
                    for tiling in MatmulTiling::ALL {
                        if !d.register_fits() && matches!(tiling, MatmulTiling::Register | MatmulTiling::RegisterNarrow) {
                            continue;
                        }
                        let drop = OperandDropout { on, p: 0.25, seed: 5 + on as u32 };
                        check_dropout(ctx, kind, tiling, d, Accumulate { alpha: 0.5, beta: 1.0 }, drop, &mut rng);
                    }
                }
            }
        }
    });
}

#[test]
fn matmul_dropout_refuses_a_probability_outside_0_to_1() {
    with_gpu!(ctx => {
        let buf = upload(ctx, &[0.0; 16]);
        for p in [1.0, -0.1, f32::NAN] {
            let drop = OperandDropout { on: DropOn::A, p, seed: 1 };
            let err = matmul_dropout_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &buf, &buf, &buf, MatmulDims::new(4, 4, 4), Accumulate::OVERWRITE, drop).unwrap_err();
            assert!(err.to_string().contains("dropout probability"), "{err}");
        }
    });
}

#[test]
fn matmul_low_rank_term_in_the_epilogue() {
    // out = beta·out + alpha·(product + scale·h·V): LoRA's B product in the base forward and
    // dh·A in its input gradient, inside the tiled kernels (off the tiles, over ranks that are
    // not multiples of the 8 staged steps, and over reductions long enough to split, where
    // only the first part adds the term), and launched after the product by the others; with
    // and without dropout on the term's product alone (LoRA's mask on its part of dx).
    with_gpu!(ctx => {
        let mut rng = Rng::new(41);
        let shapes = [MatmulDims::new(37, 24, 52), MatmulDims::new(130, 72, 36), MatmulDims::new(10, 12, 3000), MatmulDims::new(9, 2600, 20)];
        for kind in [MatmulKind::Forward, MatmulKind::BackwardInput] {
            for d in shapes {
                for rank in [1, 8, 13] {
                    for tiling in MatmulTiling::ALL {
                        if !d.register_fits() && matches!(tiling, MatmulTiling::Register | MatmulTiling::RegisterNarrow) {
                            continue;
                        }
                        for acc in [Accumulate::OVERWRITE, Accumulate { alpha: 0.5, beta: 1.0 }] {
                            for dropout in [(0.0, 0), (0.3, 17)] {
                                check_low_rank(ctx, kind, tiling, d, acc, rank, dropout, &mut rng);
                            }
                        }
                    }
                }
            }
        }
        // the term costs no launch of its own in the tiled kernels (counted on a context of its
        // own: the shared one runs other tests' launches in the same window)
        let own = own_gpu().expect("a second context on the adapter");
        own.profile_begin();
        check_low_rank(&own, MatmulKind::BackwardInput, MatmulTiling::Tiled, MatmulDims::new(37, 24, 52), Accumulate::OVERWRITE, 8, (0.1, 3), &mut rng);
        let profile = pollster::block_on(own.profile_end()).unwrap();
        assert_eq!(profile.kernels.values().map(|k| k.launches).sum::<u64>(), 1, "{:?}", profile.kernels);
        // nor anything but a forward or an input gradient of one matrix
        let buf = upload(ctx, &[0.0; 64]);
        let term = LowRankTerm { h: &buf, v: &buf, rank: 2, scale: 1.0, dropout: (0.0, 0), layout: TermLayout::Rows };
        let err = matmul_low_rank_with(ctx, MatmulKind::BackwardWeight, MatmulTiling::Tiled, &buf, &buf, &buf, MatmulDims::new(4, 4, 4), Accumulate::OVERWRITE, term).unwrap_err();
        assert!(err.to_string().contains("low-rank term"), "{err}");
        let short = upload(ctx, &[0.0; 7]);
        let err = matmul_low_rank_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &buf, &buf, &buf, MatmulDims::new(4, 4, 4), Accumulate::OVERWRITE, LowRankTerm { h: &short, ..term }).unwrap_err();
        assert!(err.to_string().contains("low-rank term's h"), "{err}");
        // and the term's dropout mask without a term is refused, not ignored
        let drop = OperandDropout { on: DropOn::Term, p: 0.5, seed: 1 };
        let err = matmul_dropout_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &buf, &buf, &buf, MatmulDims::new(4, 4, 4), Accumulate::OVERWRITE, drop).unwrap_err();
        assert!(err.to_string().contains("needs the term"), "{err}");
    });
}

/// The input gradient of weights stacked by rows from their parts' output gradients in
/// blocks apart (ops::matmul::ColumnBlocks: q's, k's and v's; gate's and up's), with no
/// term, a term as rows and a term in blocks (LoRA's dh of each part against their A's back
/// to back), with and without the term's dropout, in both tile sizes and across a split
/// reduction: against the CPU on the dense matrices, in one launch (split: and its sum). A
/// kernel that cannot read blocks refuses them.
#[test]
fn tiled_input_gradient_reads_its_input_in_blocks() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(43);
        let own = own_gpu().expect("a second context on the adapter");
        for (m, widths, k) in [(37, vec![24, 8, 8], 52), (130, vec![40, 16], 36), (9, vec![3000, 2000], 20)] {
            let n: usize = widths.iter().sum();
            let d = MatmulDims::new(m, n, k);
            let dense = rng.vec_uniform(m * n, -1.0, 1.0);
            let (a, blocks) = in_blocks(&dense, m, &widths, 5);
            let a_blocks = ColumnBlocks::new(&blocks).unwrap();
            let w = rng.vec_uniform(n * k, -1.0, 1.0);
            // on a context of its own, so that its launches are counted alone
            let (ab, wb) = (upload(&own, &a), upload(&own, &w));
            let product = reference(MatmulKind::BackwardInput, &dense, &w, &d);
            let rank = 3;
            let count = widths.len();
            // the term: each part's dh (m, rank) in blocks, their A's (count·rank, k) back to back
            let h_dense = rng.vec_uniform(m * count * rank, -1.0, 1.0);
            let (h, h_blocks) = in_blocks(&h_dense, m, &vec![rank; count], 3);
            let v = rng.vec_uniform(count * rank * k, -1.0, 1.0);
            let (hb, hdb, vb) = (upload(&own, &h), upload(&own, &h_dense), upload(&own, &v));
            let term_product = reference(MatmulKind::BackwardInput, &h_dense, &v, &MatmulDims::new(m, count * rank, k));
            for tiling in [MatmulTiling::Tiled, MatmulTiling::TiledWide] {
                for (layout, dropout) in [(None, (0.0, 0)), (Some(TermLayout::Rows), (0.0, 0)), (Some(TermLayout::Blocks(ColumnBlocks::new(&h_blocks).unwrap())), (0.0, 0)), (Some(TermLayout::Blocks(ColumnBlocks::new(&h_blocks).unwrap())), (0.3, 9))] {
                    let prior = rng.vec_uniform(m * k, -1.0, 1.0);
                    let out = upload(&own, &prior);
                    let acc = Accumulate { alpha: 1.0, beta: 0.5 };
                    let blocked = MatmulDims { a_blocks: Some(a_blocks), ..d };
                    let h_buf = if matches!(layout, Some(TermLayout::Blocks(_))) { &hb } else { &hdb };
                    let what = format!("{tiling:?} {m}×{widths:?}×{k}, term {layout:?}, dropout {dropout:?}");
                    own.profile_begin();
                    match layout {
                        Some(layout) => {
                            let term = LowRankTerm { h: h_buf, v: &vb, rank: count * rank, scale: 1.25, dropout, layout };
                            matmul_low_rank_with(&own, MatmulKind::BackwardInput, tiling, &out, &ab, &wb, blocked, acc, term).unwrap()
                        }
                        None => matmul_with(&own, MatmulKind::BackwardInput, tiling, &out, &ab, &wb, blocked, acc).unwrap(),
                    }
                    // one launch (a split reduction: and the sum of its parts)
                    let launches: u64 = pollster::block_on(own.profile_end()).unwrap().kernels.values().map(|k| k.launches).sum();
                    assert_eq!(launches, if n > 4096 { 2 } else { 1 }, "{what}: launches");
                    let mut extra = vec![0.0; m * k];
                    if layout.is_some() {
                        cpu::dropout_forward(&mut extra, &term_product, dropout.0, dropout.1, 0.0);
                    }
                    let want: Vec<f64> = (0..m * k).map(|i| product[i] + 1.25 * extra[i] + 0.5 * prior[i] as f64).collect();
                    assert_close(&what, &read(&own, &out), &want, ATOL, 4e-4);
                }
            }
        }
        // blocks only where the tiled kernels take an input gradient, spanning its reduction
        let buf = upload(ctx, &[0.0; 256]);
        let blocks = ColumnBlocks::new(&[(0, 4), (20, 4)]).unwrap();
        let d = MatmulDims { a_blocks: Some(blocks), ..MatmulDims::new(4, 8, 4) };
        let err = matmul_with(ctx, MatmulKind::BackwardInput, MatmulTiling::Register, &buf, &buf, &buf, d, Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("in blocks"), "{err}");
        let err = matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &buf, &buf, &buf, d, Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("in blocks"), "{err}");
        let wide = MatmulDims { a_blocks: Some(blocks), ..MatmulDims::new(4, 12, 4) };
        let err = matmul_with(ctx, MatmulKind::BackwardInput, MatmulTiling::Tiled, &buf, &buf, &buf, wide, Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("span 8 columns, not 12"), "{err}");
        let term = LowRankTerm { h: &buf, v: &buf, rank: 8, scale: 1.0, dropout: (0.0, 0), layout: TermLayout::Blocks(blocks) };
        let err = matmul_low_rank_with(ctx, MatmulKind::BackwardInput, MatmulTiling::Register, &buf, &buf, &buf, MatmulDims::new(4, 8, 4), Accumulate::OVERWRITE, term).unwrap_err();
        assert!(err.to_string().contains("cannot read a term laid out as Blocks"), "{err}");
        assert!(ColumnBlocks::new(&[(4, 4), (20, 4)]).is_err() && ColumnBlocks::new(&[(0, 4)]).is_err());
    });
}

/// A weight gradient whose a lies in blocks along its columns, the gradient's rows (LoRA's dA
/// of the targets that share an input from each one's dh, MatmulDims::a_blocks): against the
/// CPU in both tile sizes, with and without dropout on the input, across a reduction long
/// enough to split (summed by the launcher, or left as parts for a later sum), in one launch.
#[test]
fn tiled_weight_gradient_reads_its_a_in_blocks() {
    use hearth_core::ops::matmul::{matmul_weight_parts, SplitParts};
    with_gpu!(ctx => {
        let mut rng = Rng::new(53);
        let own = own_gpu().expect("a second context on the adapter");
        for (m, widths, k) in [(37, vec![3, 3, 3], 52), (130, vec![16, 16], 36), (3000, vec![8, 8, 8], 20)] {
            let n: usize = widths.iter().sum();
            let dense = rng.vec_uniform(m * n, -1.0, 1.0);
            let (a, blocks) = in_blocks(&dense, m, &widths, 5);
            let d = MatmulDims { a_blocks: Some(ColumnBlocks::new(&blocks).unwrap()), ..MatmulDims::new(m, n, k) };
            let x = rng.vec_uniform(m * k, -1.0, 1.0);
            let (ab, xb) = (upload(&own, &a), upload(&own, &x));
            for (tiling, p) in [(MatmulTiling::Tiled, 0.0), (MatmulTiling::Tiled, 0.3), (MatmulTiling::TiledWide, 0.3)] {
                let drop = OperandDropout { on: DropOn::B, p, seed: 11 };
                let mut masked = vec![0.0; m * k];
                cpu::dropout_forward(&mut masked, &to_f64(&x), p, drop.seed, 0.0);
                let masked: Vec<f32> = masked.into_iter().map(|v| v as f32).collect();
                let product = reference(MatmulKind::BackwardWeight, &dense, &masked, &MatmulDims::new(m, n, k));
                let what = format!("{tiling:?} {m}×{widths:?}×{k}, dropout {p}");
                let prior = rng.vec_uniform(n * k, -1.0, 1.0);
                let out = upload(&own, &prior);
                own.profile_begin();
                matmul_dropout_with(&own, MatmulKind::BackwardWeight, tiling, &out, &ab, &xb, d, Accumulate { alpha: 0.5, beta: 1.0 }, drop).unwrap();
                let launches: u64 = pollster::block_on(own.profile_end()).unwrap().kernels.values().map(|k| k.launches).sum();
                assert_eq!(launches, if m > 1000 { 2 } else { 1 }, "{what}: launches");
                let want: Vec<f64> = product.iter().zip(&prior).map(|(v, &c)| 0.5 * v + c as f64).collect();
                assert_close(&what, &read(&own, &out), &want, ATOL, 4e-4);
                // as parts, each reduction's part at a stride from the last
                let splits = 3;
                let stride = n * k + 20;
                let parts = std::sync::Arc::new(upload(&own, &vec![0.0; 64 + splits * stride]));
                let dest = SplitParts { parts: &parts, at: 256, stride, splits };
                matmul_weight_parts(&own, dest, &ab, &xb, d, 0.5, Some(drop)).unwrap();
                let all = read(&own, &parts);
                let summed: Vec<f32> = (0..n * k).map(|i| (0..splits).map(|s| all[64 + s * stride + i]).sum()).collect();
                let want: Vec<f64> = product.iter().map(|v| 0.5 * v).collect();
                assert_close(&format!("{what}, as {splits} parts"), &summed, &want, ATOL, 4e-4);
            }
        }
        let buf = upload(ctx, &[0.0; 256]);
        let d = MatmulDims { a_blocks: Some(ColumnBlocks::new(&[(0, 4), (20, 4)]).unwrap()), ..MatmulDims::new(4, 8, 4) };
        let err = matmul_with(ctx, MatmulKind::BackwardWeight, MatmulTiling::Register, &buf, &buf, &buf, d, Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("in blocks"), "{err}");
    });
}

/// A batch whose operands lie apart (MatmulDims::batch_strides: parts of arenas, as LoRA's
/// gradients of several targets at once read and write them): input and weight gradients
/// against the CPU item by item, the gaps untouched, also where few tiles split their
/// reductions (z: item and part; the sum writes each item at its stride); and a batch of
/// weight gradients as the split parts of a long reduction, each part holding every item's.
#[test]
fn batched_products_at_strides_match_cpu() {
    use hearth_core::ops::matmul::{matmul_weight_parts, BatchStrides, SplitParts};
    with_gpu!(ctx => {
        let mut rng = Rng::new(59);
        // (lay `items` of `len` floats `stride` apart, NaN between them)
        let apart = |items: &[f32], len: usize, stride: usize| -> Vec<f32> {
            let mut buf = vec![f32::NAN; (items.len() / len - 1) * stride + len];
            for (z, item) in items.chunks(len).enumerate() {
                buf[z * stride..][..len].copy_from_slice(item);
            }
            buf
        };
        // (70 × 1536 × 16: LoRA's dh of gate and up, 6 parts; 2000 × 16 × 20: a dB over
        // 2000 tokens, 7 parts)
        for (kind, m, n, k) in [(MatmulKind::BackwardInput, 70, 40, 16), (MatmulKind::BackwardWeight, 70, 40, 16), (MatmulKind::BackwardWeight, 9, 33, 20), (MatmulKind::BackwardInput, 70, 1536, 16), (MatmulKind::BackwardWeight, 2000, 16, 20)] {
            let d = MatmulDims { batch: 2, b_batched: true, ..MatmulDims::new(m, n, k) };
            let (a_len, b_len, c_len) = kind.operand_lens(&d);
            let strides = BatchStrides { a: a_len + 12, b: b_len + 4, c: c_len + 8 };
            let (a, b) = (rng.vec_uniform(2 * a_len, -1.0, 1.0), rng.vec_uniform(2 * b_len, -1.0, 1.0));
            let want = reference(kind, &a, &b, &d);
            let (ab, bb) = (upload(ctx, &apart(&a, a_len, strides.a)), upload(ctx, &apart(&b, b_len, strides.b)));
            let d = MatmulDims { batch_strides: Some(strides), ..d };
            let prior = vec![7.0; strides.c + c_len];
            let out = upload(ctx, &prior);
            ctx.profile_begin();
            matmul_with(ctx, kind, MatmulTiling::Tiled, &out, &ab, &bb, d, Accumulate { alpha: 0.5, beta: 1.0 }).unwrap();
            let summed = pollster::block_on(ctx.profile_end()).unwrap().kernels.keys().any(|name| name.contains("matmul_sum_splits"));
            assert_eq!(summed, n == 1536 || m == 2000, "{kind:?} {m}×{n}×{k}: the reduction split where few tiles take it");
            let got = read(ctx, &out);
            let what = format!("{kind:?} {m}×{n}×{k}, two items at {strides:?}");
            for z in 0..2 {
                let want: Vec<f64> = want[z * c_len..][..c_len].iter().map(|v| 0.5 * v + 7.0).collect();
                assert_close(&format!("{what}: item {z}"), &got[z * strides.c..][..c_len], &want, ATOL, RTOL);
            }
            assert!(got[c_len..strides.c].iter().all(|&v| v == 7.0), "{what}: the gap between the outputs changed");
            if kind == MatmulKind::BackwardWeight {
                // as 3 parts, 40 floats past the items' span apart
                let (splits, span) = (3, strides.c + c_len);
                let parts = std::sync::Arc::new(upload(ctx, &vec![0.0; 64 + splits * (span + 40)]));
                matmul_weight_parts(ctx, SplitParts { parts: &parts, at: 256, stride: span + 40, splits }, &ab, &bb, d, 0.5, None).unwrap();
                let all = read(ctx, &parts);
                for z in 0..2 {
                    let summed: Vec<f32> = (0..c_len).map(|i| (0..splits).map(|s| all[64 + s * (span + 40) + z * strides.c + i]).sum()).collect();
                    let want: Vec<f64> = want[z * c_len..][..c_len].iter().map(|v| 0.5 * v).collect();
                    assert_close(&format!("{what}: item {z} as {splits} parts"), &summed, &want, ATOL, RTOL);
                }
            }
        }
        let buf = upload(ctx, &[0.0; 256]);
        let d = MatmulDims { batch: 2, b_batched: true, batch_strides: Some(BatchStrides { a: 20, b: 20, c: 20 }), ..MatmulDims::new(4, 4, 4) };
        let err = matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Register, &buf, &buf, &buf, d, Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("batch strides"), "{err}");
    });
}

/// The forward of weights stacked by rows into their parts' outputs in blocks apart
/// (MatmulDims::c_blocks), without a term and with the LoRA term of each part, or of all but
/// the middle part or the last (H: the adapted parts' x·Aᵀ in blocks, an empty one for the
/// middle; V: their B's stacked by rows, block-diagonal), in both tile sizes and across a
/// split reduction: against the CPU per part, the gaps between the blocks untouched; and what
/// cannot be is refused.
#[test]
fn tiled_forward_writes_its_output_in_blocks() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(47);
        // (the last: a split reduction, its parts summed into the blocks)
        for (m, widths, k) in [(37, vec![24, 8, 8], 52), (130, vec![40, 36], 36), (9, vec![24, 8, 8], 3000)] {
            let n: usize = widths.iter().sum();
            let (x, w) = (rng.vec_uniform(m * k, -1.0, 1.0), rng.vec_uniform(n * k, -1.0, 1.0));
            let (xb, wb) = (upload(ctx, &x), upload(ctx, &w));
            let (gapped, blocks) = in_blocks(&vec![0.0; m * n], m, &widths, 7);
            let out_blocks = ColumnBlocks::new(&blocks).unwrap();
            let d = MatmulDims { c_blocks: Some(out_blocks), ..MatmulDims::new(m, n, k) };
            let product = reference(MatmulKind::Forward, &x, &w, &MatmulDims::new(m, n, k));
            let mut adapted = vec![None, Some(vec![true; widths.len()])];
            if widths.len() == 3 {
                adapted.extend([Some(vec![true, false, true]), Some(vec![true, true, false])]);
            }
            for tiling in [MatmulTiling::Tiled, MatmulTiling::TiledWide] {
                for parts in &adapted {
                    let out = upload(ctx, &gapped);
                    let mut want = product.clone();
                    match parts {
                        Some(parts) => {
                            let (term, h, v) = BlockedTerm::new(ctx, &mut rng, m, &widths, parts, 3);
                            matmul_low_rank_with(ctx, MatmulKind::Forward, tiling, &out, &xb, &wb, d, Accumulate::OVERWRITE, term.of(&h, &v)).unwrap();
                            term.add_to(&mut want, m);
                        }
                        None => matmul_with(ctx, MatmulKind::Forward, tiling, &out, &xb, &wb, d, Accumulate::OVERWRITE).unwrap(),
                    }
                    let got = read(ctx, &out);
                    let what = format!("{tiling:?} {m}×{widths:?}×{k} forward into blocks, the term of {parts:?}");
                    assert_close(&what, &from_blocks(&got, m, &blocks), &want, ATOL, RTOL);
                    assert!(got.iter().zip(&gapped).all(|(g, p)| p.is_finite() || g.is_nan()), "{what}: wrote between the blocks");
                }
            }
        }
        // only the tiled forward writes blocks; a blocked term needs the output's blocks
        let buf = upload(ctx, &[0.0; 256]);
        let blocks = ColumnBlocks::new(&[(0, 4), (20, 4)]).unwrap();
        let d = MatmulDims { c_blocks: Some(blocks), ..MatmulDims::new(4, 8, 4) };
        let err = matmul_with(ctx, MatmulKind::Forward, MatmulTiling::Register, &buf, &buf, &buf, d, Accumulate::OVERWRITE).unwrap_err();
        assert!(err.to_string().contains("an output in blocks"), "{err}");
        let term = LowRankTerm { h: &buf, v: &buf, rank: 8, scale: 1.0, dropout: (0.0, 0), layout: TermLayout::Blocks(blocks) };
        let err = matmul_low_rank_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &buf, &buf, &buf, MatmulDims::new(4, 8, 4), Accumulate::OVERWRITE, term).unwrap_err();
        assert!(err.to_string().contains("needs the output in as many blocks"), "{err}");
        // nor an output in blocks a term as rows (one H for every part)
        let rows = LowRankTerm { layout: TermLayout::Rows, rank: 2, ..term };
        let err = matmul_low_rank_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &buf, &buf, &buf, d, Accumulate::OVERWRITE, rows).unwrap_err();
        assert!(err.to_string().contains("an output in blocks a term in blocks"), "{err}");
        // nor an output in fewer blocks than the term (its empty second counted)
        let skipping = LowRankTerm { layout: TermLayout::Blocks(ColumnBlocks::new(&[(0, 4), (0, 0), (20, 4)]).unwrap()), ..term };
        let err = matmul_low_rank_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &buf, &buf, &buf, d, Accumulate::OVERWRITE, skipping).unwrap_err();
        assert!(err.to_string().contains("needs the output in as many blocks or one more"), "{err}");
        // and only the second of three blocks may be empty, and only in a forward's term
        for empty in [&[(0, 0), (4, 4)][..], &[(0, 4), (4, 0)], &[(0, 4), (4, 4), (8, 0)]] {
            assert!(ColumnBlocks::new(empty).unwrap_err().to_string().contains("none empty but the second of three"), "{empty:?}");
        }
        let err = matmul_low_rank_with(ctx, MatmulKind::BackwardInput, MatmulTiling::Tiled, &buf, &buf, &buf, MatmulDims::new(4, 8, 4), Accumulate::OVERWRITE, skipping).unwrap_err();
        assert!(err.to_string().contains("an input gradient's term in blocks with an empty one"), "{err}");
    });
}

#[allow(clippy::too_many_arguments)]
fn check_low_rank(ctx: &hearth_core::GpuContext, kind: MatmulKind, tiling: MatmulTiling, d: MatmulDims, acc: Accumulate, rank: usize, dropout: (f32, u32), rng: &mut Rng) {
    let (a_len, b_len, c_len) = kind.operand_lens(&d);
    // the term as a product of its own in the same layout: h (M, rank) and V as its weight
    let term_dims = match kind {
        MatmulKind::Forward => MatmulDims::new(d.m, d.n, rank),
        _ => MatmulDims::new(d.m, rank, d.k),
    };
    let (h_len, v_len, _) = kind.operand_lens(&term_dims);
    // the f16 tilings round what they stage to f16 (check_on): so do the inputs here, and
    // the scale is a power of 2
    let coop = tiling.rounds_to_f16();
    let round = |v: Vec<f32>| -> Vec<f32> { if coop { to_f16(v) } else { v } };
    let (a, b) = (round(rng.vec_uniform(a_len, -1.0, 1.0)), round(rng.vec_uniform(b_len, -1.0, 1.0)));
    let (h, v) = (round(rng.vec_uniform(h_len, -1.0, 1.0)), round(rng.vec_uniform(v_len, -1.0, 1.0)));
    let prior = rng.vec_uniform(c_len, -1.0, 1.0);
    let out = if acc.beta == 0.0 { poisoned(ctx, c_len) } else { upload(ctx, &prior) };
    let (hb, vb) = (upload(ctx, &h), upload(ctx, &v));
    let scale = if coop { 2.0 } else { 1.75 };
    let term = LowRankTerm { h: &hb, v: &vb, rank, scale, dropout, layout: TermLayout::Rows };
    matmul_low_rank_with(ctx, kind, tiling, &out, &upload(ctx, &a), &upload(ctx, &b), d, acc, term).unwrap();
    let product = reference(kind, &a, &b, &d);
    let mut extra = vec![0.0; c_len];
    cpu::dropout_forward(&mut extra, &reference(kind, &h, &v, &term_dims), dropout.0, dropout.1, 0.0);
    let want: Vec<f64> = (0..c_len).map(|i| acc.alpha as f64 * (product[i] + scale as f64 * extra[i]) + acc.beta as f64 * prior[i] as f64).collect();
    assert_close(&format!("{kind:?} {tiling:?} {d:?} + rank {rank} term, dropout {dropout:?}"), &read(ctx, &out), &want, ATOL, RTOL);
}

#[allow(clippy::too_many_arguments)]
fn check_dropout(ctx: &hearth_core::GpuContext, kind: MatmulKind, tiling: MatmulTiling, d: MatmulDims, acc: Accumulate, drop: OperandDropout, rng: &mut Rng) {
    let (a_len, b_len, c_len) = kind.operand_lens(&d);
    let bb = if d.b_batched { d.batch } else { 1 };
    // the f16 tilings stage dropout(input) rounded to f16: exact for inputs in f16 and a
    // dropout of 1/2 (kept values doubled)
    let round = |v: Vec<f32>| -> Vec<f32> { if tiling.rounds_to_f16() { to_f16(v) } else { v } };
    let a = round(rng.vec_uniform(d.batch * a_len, -1.0, 1.0));
    let b = round(rng.vec_uniform(bb * b_len, -1.0, 1.0));
    let prior = rng.vec_uniform(d.batch * c_len, -1.0, 1.0);
    let out = upload(ctx, &prior);
    matmul_dropout_with(ctx, kind, tiling, &out, &upload(ctx, &a), &upload(ctx, &b), d, acc, drop).unwrap();
    let masked = |v: &[f32]| -> Vec<f32> {
        let mut o = vec![0.0; v.len()];
        cpu::dropout_forward(&mut o, &to_f64(v), drop.p, drop.seed, 0.0);
        o.into_iter().map(|x| x as f32).collect()
    };
    let (a, b) = match drop.on {
        DropOn::A => (masked(&a), b),
        DropOn::B => (a, masked(&b)),
        DropOn::Out | DropOn::Term => (a, b),
    };
    let mut product: Vec<f64> = reference(kind, &a, &b, &d).iter().map(|p| acc.alpha as f64 * p).collect();
    if drop.on == DropOn::Out {
        let mut o = vec![0.0; product.len()];
        cpu::dropout_forward(&mut o, &product, drop.p, drop.seed, 0.0);
        product = o;
    }
    let want: Vec<f64> = product.iter().zip(&prior).map(|(p, &c)| p + acc.beta as f64 * c as f64).collect();
    assert_close(&format!("{kind:?} {tiling:?} {d:?} dropout on {:?}", drop.on), &read(ctx, &out), &want, ATOL, RTOL);
}

/// One input by several weights back to back (LoRA's x·Aᵀ of the targets that read one
/// input) in one tiled launch, each output at a stride from the last (the gaps untouched),
/// with one dropout mask on the input for all: against the CPU, product by product, on random
/// shapes with and without dropout; and a destination too small is refused.
#[test]
fn matmul_shared_input_matches_cpu() {
    use hearth_core::ops::matmul::{matmul_shared_input, SplitParts};
    with_gpu!(ctx => {
        let mut rng = Rng::new(41);
        // (the last two over reductions that few tiles split: LoRA's x·Aᵀ of q, k and v, or of
        // gate and up, each part holding every target's)
        for round in 0..6 {
            let k = if round < 4 { 8 + rng.below(300) } else { 512 + rng.below(1100) };
            let (count, m, n) = (2 + rng.below(2), 1 + rng.below(70), 1 + rng.below(40));
            let d = MatmulDims { batch: count, b_batched: true, a_shared: true, ..MatmulDims::new(m, n, k) };
            let stride = m * n + 64 + rng.below(64) * 4;
            let x = rng.vec_uniform(m * k, -1.0, 1.0);
            let w = rng.vec_uniform(count * n * k, -1.0, 1.0);
            for p in [0.0, 0.3] {
                let drop = OperandDropout { on: DropOn::A, p, seed: 7 };
                let prior = rng.vec_uniform(count * stride, -1.0, 1.0);
                let out = std::sync::Arc::new(upload(ctx, &prior));
                let dest = SplitParts { parts: &out, at: 0, stride, splits: 1 };
                matmul_shared_input(ctx, dest, &upload(ctx, &x), &upload(ctx, &w), d, drop).unwrap();
                let got = read(ctx, &out);
                let mut dropped = vec![0.0; m * k];
                cpu::dropout_forward(&mut dropped, &to_f64(&x), p, drop.seed, 0.0);
                for z in 0..count {
                    let mut want = vec![0.0; m * n];
                    cpu::matmul_forward(&mut want, &dropped, &to_f64(&w[z * n * k..][..n * k]), m, n, k);
                    assert_close(&format!("product {z} of {d:?}, dropout {p}"), &got[z * stride..][..m * n], &want, ATOL, RTOL);
                    assert_eq!(&got[z * stride + m * n..(z + 1) * stride], &prior[z * stride + m * n..(z + 1) * stride], "the gap after product {z} of {d:?}");
                }
            }
        }
        let d = MatmulDims { batch: 3, b_batched: true, a_shared: true, ..MatmulDims::new(4, 8, 8) };
        let (small, x, w) = (std::sync::Arc::new(upload(ctx, &[0.0; 64])), upload(ctx, &[0.0; 32]), upload(ctx, &[0.0; 192]));
        let err = matmul_shared_input(ctx, SplitParts { parts: &small, at: 0, stride: 32, splits: 1 }, &x, &w, d, OperandDropout { on: DropOn::A, p: 0.0, seed: 0 }).unwrap_err();
        assert!(err.to_string().contains("do not fit a buffer of 256 bytes"), "{err}");
    });
}

/// Decoding with an adapter over stacked weights: the matrix-vector kernel adds each stacked
/// part's h·Bᵀ from that part's h (q, k and v: three parts, or all but the middle or the last
/// adapted, whose rows take none; the gated kernel: gate's and up's), in its launch, for H
/// laid out as decoding writes it (the parts' h side by side in each row) and as the
/// shared-input launch does (each part's rows apart); and with the input norm (which scales
/// the product, not the term); against the CPU.
#[test]
fn gemv_adds_a_term_over_stacked_weights() {
    use hearth_core::ops::matmul::StackedTerm;
    for own in hearth_tests::own_gpu_each_reduction() {
        let ctx = &own;
        let mut rng = Rng::new(43);
        for (m, rank, sizes) in [(1, 16, [64, 24, 24]), (3, 5, [40, 8, 16]), (4, 70, [9, 9, 9]), (10, 16, [64, 24, 24])] {
            let (rows, k) = (sizes.iter().sum::<usize>(), 96);
            // (starts, skipped): every part adapted, all but the middle, all but the last
            let layouts = [([sizes[0], sizes[0] + sizes[1]], [0, 0]), ([sizes[0] + sizes[1], usize::MAX], [sizes[0], sizes[1]]), ([sizes[0], usize::MAX], [sizes[0] + sizes[1], sizes[2]])];
            for ((starts, skipped), (h_row, h_part)) in layouts.into_iter().flat_map(|l| [(3 * rank, rank), (rank, m * rank + 3)].map(|h| (l, h))) {
                let stacked = StackedTerm { h_row, h_part, starts, skipped };
                // w and v long enough for the stacked rows and for gate's and up's (2 × the first part)
                let long = rows.max(2 * sizes[0]);
                let (x, w) = (rng.vec_uniform(m * k, -1.0, 1.0), rng.vec_uniform(long * k, -1.0, 1.0));
                let (h, v) = (rng.vec_uniform(2 * h_part + m * h_row, -1.0, 1.0), rng.vec_uniform(long * rank, -1.0, 1.0));
                let (hb, vb) = (upload(ctx, &h), upload(ctx, &v));
                let term = LowRankTerm { h: &hb, v: &vb, rank, scale: 1.5, dropout: (0.0, 0), layout: TermLayout::Stacked(stacked) };
                let out = poisoned(ctx, m * rows);
                ctx.profile_begin();
                matmul_low_rank_with(ctx, MatmulKind::Forward, MatmulTiling::Gemv, &out, &upload(ctx, &x), &upload(ctx, &w[..rows * k]), MatmulDims::new(m, rows, k), Accumulate::OVERWRITE, term).unwrap();
                let launches: u64 = pollster::block_on(ctx.profile_end()).unwrap().kernels.values().map(|k| k.launches).sum();
                assert_eq!(launches, 1);
                let mut want = vec![0.0; m * rows];
                cpu::matmul_forward(&mut want, &to_f64(&x), &to_f64(&w[..rows * k]), m, rows, k);
                let extra = stacked_term_reference(&h, &v, m, rows, rank, 1.5, h_row, h_part, starts, skipped);
                let want: Vec<f64> = want.iter().zip(&extra).map(|(a, b)| a + b).collect();
                assert_close(&format!("{m}×{rows}×{k} + rank {rank} term over {sizes:?}, {stacked:?}"), &read(ctx, &out), &want, ATOL, RTOL);
                // normed: the stream's rows (far from unit RMS) normed as they are read
                let (nw, eps) = (rng.vec_uniform(k, 0.5, 1.5), 1e-5);
                let (x3, nwb): (Vec<f32>, _) = (x.iter().map(|v| 3.0 * v).collect(), upload(ctx, &nw));
                let norm = InputNorm { weight: &nwb, eps };
                let xn = rmsnorm_reference(&x3, &nw, m, k, eps);
                let out = poisoned(ctx, m * rows);
                matmul_gemv_normed(ctx, &out, &upload(ctx, &x3), &upload(ctx, &w[..rows * k]), MatmulDims::new(m, rows, k), norm, Some(term)).unwrap();
                let mut normed = vec![0.0; m * rows];
                cpu::matmul_forward(&mut normed, &xn, &to_f64(&w[..rows * k]), m, rows, k);
                let normed: Vec<f64> = normed.iter().zip(&extra).map(|(a, b)| a + b).collect();
                assert_close(&format!("normed {m}×{rows}×{k} + rank {rank} term, {stacked:?}"), &read(ctx, &out), &normed, ATOL, RTOL);
                // gate's rows then up's, the first `n` of the parts above
                let n = sizes[0];
                let gated = StackedTerm { starts: [n, usize::MAX], skipped: [0, 0], ..stacked };
                let term = LowRankTerm { layout: TermLayout::Stacked(gated), ..term };
                for act in [Activation::Silu, Activation::GeluTanh] {
                    let out = poisoned(ctx, m * n);
                    matmul_gemv_gated(ctx, act, &out, &upload(ctx, &x), &upload(ctx, &w[..2 * n * k]), MatmulDims::new(m, n, k), None, Some(term)).unwrap();
                    let extra = stacked_term_reference(&h, &v, m, 2 * n, rank, 1.5, h_row, h_part, gated.starts, gated.skipped);
                    let want = gated_reference(act == Activation::GeluTanh, &to_f64(&x), &w[..2 * n * k], m, n, k, Some(&extra));
                    assert_close(&format!("{act:?} {m}×{n}×{k} + rank {rank} term, {gated:?}"), &read(ctx, &out), &want, ATOL, RTOL);
                    let out = poisoned(ctx, m * n);
                    matmul_gemv_gated(ctx, act, &out, &upload(ctx, &x3), &upload(ctx, &w[..2 * n * k]), MatmulDims::new(m, n, k), Some(norm), Some(term)).unwrap();
                    let want = gated_reference(act == Activation::GeluTanh, &xn, &w[..2 * n * k], m, n, k, Some(&extra));
                    assert_close(&format!("normed {act:?} {m}×{n}×{k} + rank {rank} term, {gated:?}"), &read(ctx, &out), &want, ATOL, RTOL);
                }
            }
        }
        // only the matrix-vector kernels read a stacked term
        let buf = upload(ctx, &[0.0; 4096]);
        let term = LowRankTerm { h: &buf, v: &buf, rank: 2, scale: 1.0, dropout: (0.0, 0), layout: TermLayout::Stacked(StackedTerm { h_row: 4, h_part: 2, starts: [8, 16], skipped: [0, 0] }) };
        let err = matmul_low_rank_with(ctx, MatmulKind::Forward, MatmulTiling::Tiled, &buf, &buf, &buf, MatmulDims::new(8, 24, 8), Accumulate::OVERWRITE, term).unwrap_err();
        assert!(err.to_string().contains("Tiled cannot read a term laid out as Stacked"), "{err}");
    }
}

#[test]
fn split_reductions_stay_within_their_workgroups() {
    // A launch of few tiles splits its reduction into as many parts as keep it within the
    // workgroups asked for (about what the GPU runs at once, where tuned), not past them: on
    // the H100's tuning (256 workgroups, parts of 64 steps or more), SmolLM2's 576-wide
    // outputs of 2,048 tokens, 80 tiles of 128, in 3 parts (240 workgroups; 4 would be 320,
    // a second round for 56 of them); q, k and v stacked (960 wide: 128 tiles, not under half
    // the workgroups) and gate and up stacked (384 tiles) whole; LoRA's x·Aᵀ of down (32 tiles
    // of 64) in 8, the parts' steps permitting; and by default (64 workgroups, parts of 256
    // steps): 32 tiles whole, 16 in 4 parts, 24 in 2 (48 workgroups: 3 parts would be 72).
    // More tiles split where that takes fewer rounds of the workgroups at once: 128 tiles in
    // 2 parts (one round of 256 workgroups, half the steps); 384 in 2 (three rounds of half
    // the steps, not two whole); where 264 run at once, 192 in 4 (3 rounds of a quarter) and
    // 1,216 (Qwen2.5's gate and up) whole (in 3 parts, 14 rounds of a third: 7 % fewer, not
    // 10); 2,080 tiles of 64 where 2,048 run at once in 3 (4 rounds of a third; 4 parts, 5
    // rounds of a quarter, would pass 128 MiB), 4,160 where 4,096 do whole (2 parts would
    // pass it); none by default.
    use hearth_core::ops::matmul::forward_splits;
    let (h100, at_once) = ((256, 64), (264, 64));
    for ((m, n, k), side, split, parts) in [
        ((2048, 576, 1536), 128, h100, 3),
        ((2048, 576, 576), 128, h100, 3),
        ((2048, 960, 576), 128, h100, 2),
        ((2048, 3072, 576), 128, h100, 2),
        ((2048, 1536, 576), 128, at_once, 4),
        ((2048, 9728, 896), 128, at_once, 1),
        ((4160, 2048, 1024), 64, (2048, 64), 3),
        ((4160, 4096, 1024), 64, (4096, 64), 1),
        ((2048, 16, 1536), 64, h100, 8),
        ((2048, 16, 256), 64, h100, 1),
        ((2048, 16, 1536), 64, (64, 256), 1),
        ((1024, 16, 1536), 64, (64, 256), 4),
        ((1536, 16, 1536), 64, (64, 256), 2),
        ((2048, 576, 1536), 64, (64, 256), 1),
        // the lm_head's input gradient (rows × hidden over the vocabulary) in tiles of 128:
        // SmolLM2's in one round (25 parts, more than the 12 its length needs), Qwen2.5's
        // in two whole ones (72 parts, not the 38 its length needs: 266 workgroups)
        ((256, 576, 49152), 128, h100, 25),
        ((128, 896, 151936), 128, h100, 72),
    ] {
        assert_eq!(forward_splits(m, n, k, 1, side, split), parts, "{m} × {n} × {k} in tiles of {side}, split as {split:?}");
    }
}

#[test]
fn a_tile_choice_overrides_the_heuristics() {
    // What HEARTH_TILES and HEARTH_SPLIT_WORKGROUPS ask for (bench/gpu.sh compares them with
    // the heuristics on a GPU), on the GPU kernel paths: output tiles of the side asked for
    // whatever the output's size, and a launch of few tiles (LoRA's x·Aᵀ of q, k and v at 4 ×
    // 512 tokens: 32 tiles, not split by default) split towards the workgroups asked for; and
    // the threshold the CLI tunes for a GPU (128 × 128 tiles never, or from the thin output's
    // size); an f32 and a quantized weight; the CPU's products either way.
    use hearth_core::gpu::{KernelPaths, TileChoice};
    let mut rng = Rng::new(31);
    let (wide, thin) = (MatmulDims::new(1024, 1024, 64), MatmulDims::new(2048, 48, 576));
    let side = |side| TileChoice { side: Some(side), ..Default::default() };
    let split = TileChoice { split_workgroups: Some(256), ..Default::default() };
    // (8 parts of 72 steps instead of 2 of 288)
    let short_parts = TileChoice { split_min_steps: Some(32), ..split };
    let tuned = |from| TileChoice { wide_outputs: Some(from), ..Default::default() };
    // (choice, the wide output's tiles, the thin one's, whether the thin one splits: in
    // tiles of 128, 16 of them, under half the 64 workgroups a split aims for)
    for (choice, wide_tiles, thin_tiles, thin_splits) in [
        (TileChoice::default(), "128x128", "64x64", false),
        (side(64), "64x64", "64x64", false),
        (side(128), "128x128", "128x128", true),
        (split, "128x128", "64x64", true),
        (short_parts, "128x128", "64x64", true),
        (tuned(usize::MAX), "64x64", "64x64", false),
        (tuned(thin.m * thin.n), "128x128", "128x128", true),
    ] {
        let Some(own) = own_gpu() else { return };
        let ctx = &own.with_kernel_paths(KernelPaths::Gpu).with_tile_choice(choice);
        for (d, tiles, splits) in [(wide, wide_tiles, false), (thin, thin_tiles, thin_splits)] {
            let what = format!("{choice:?}, {} × {} × {}", d.m, d.n, d.k);
            let kernels = forwards_match_cpu(ctx, &mut rng, d, &what);
            for shader in ["matmul_tiled:matmul_tiled", "matmul_q8_0:matmul_quant_forward_tiled"] {
                assert!(kernels.keys().any(|k| k.starts_with(shader) && k.ends_with(&format!("[{tiles}]"))), "{what}: {shader} in {tiles} tiles: {kernels:?}");
            }
            let summed = kernels.iter().filter(|(k, _)| k.contains(":matmul_sum_splits")).map(|(_, s)| s.launches).sum::<u64>();
            assert_eq!(summed, if splits { 2 } else { 0 }, "{what}: the split reductions' sums: {kernels:?}");
        }
    }
}

/// The forwards of random x (M × K) through an f32 and a Q8_0 weight w (N × K) on `ctx`,
/// checked against the CPU's products: the kernels they ran.
fn forwards_match_cpu(ctx: &hearth_core::GpuContext, rng: &mut Rng, d: MatmulDims, what: &str) -> std::collections::BTreeMap<String, hearth_core::gpu::KernelStat> {
    use hearth_core::ops::matmul::matmul;
    use hearth_core::ops::matmul_quant::{matmul_quant, GpuQuantWeight};
    use hearth_core::quant::{QuantFormat, QuantTensor};
    let (x, w) = (rng.vec_uniform(d.m * d.k, -1.0, 1.0), rng.vec_uniform(d.n * d.k, -1.0, 1.0));
    let q = QuantTensor::quantize(QuantFormat::Q8_0, &w, d.n, d.k).unwrap();
    let (out, out_q) = (poisoned(ctx, d.m * d.n), poisoned(ctx, d.m * d.n));
    ctx.profile_begin();
    matmul(ctx, MatmulKind::Forward, &out, &upload(ctx, &x), &upload(ctx, &w), d, Accumulate::OVERWRITE).unwrap();
    matmul_quant(ctx, MatmulKind::Forward, &out_q, &upload(ctx, &x), &GpuQuantWeight::upload(ctx, &q).unwrap(), d.m, Accumulate::OVERWRITE).unwrap();
    let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
    assert_close(what, &read(ctx, &out), &reference(MatmulKind::Forward, &x, &w, &d), ATOL, RTOL);
    assert_close(&format!("{what}, Q8_0"), &read(ctx, &out_q), &reference(MatmulKind::Forward, &x, &q.dequantize(), &d), ATOL, RTOL);
    kernels
}

#[test]
fn launches_of_more_tiles_split_into_fewer_rounds() {
    // Where the tuning measured how many workgroups run at once (here 96), a launch of more
    // than half as many tiles splits where its parts take fewer rounds for the reduction's
    // length: 64 tiles of 64 over 576 steps in 3 parts (192 workgroups, two rounds of a third
    // of the steps; whole, one round of all of them). The untuned default (64) leaves it
    // whole. An f32 and a quantized weight; the CPU's products either way.
    use hearth_core::gpu::{KernelPaths, TileChoice};
    use hearth_core::ops::matmul::forward_splits;
    let mut rng = Rng::new(37);
    let d = MatmulDims::new(512, 512, 576);
    let measured = TileChoice { side: Some(64), split_workgroups: Some(96), split_min_steps: Some(64), ..Default::default() };
    let default = TileChoice { side: Some(64), ..Default::default() };
    assert_eq!(forward_splits(d.m, d.n, d.k, 1, 64, (96, 64)), 3);
    for (choice, sums) in [(measured, 2), (default, 0)] {
        let Some(own) = own_gpu() else { return };
        let ctx = &own.with_kernel_paths(KernelPaths::Gpu).with_tile_choice(choice);
        let kernels = forwards_match_cpu(ctx, &mut rng, d, &format!("{choice:?}"));
        let summed = kernels.iter().filter(|(k, _)| k.contains(":matmul_sum_splits")).map(|(_, s)| s.launches).sum::<u64>();
        assert_eq!(summed, sums, "{choice:?}: the split reductions' sums: {kernels:?}");
    }
}

#[test]
fn long_reductions_take_tiles_of_128_where_the_tuning_says() {
    // The lm_head's input gradient (rows × hidden over the vocabulary) splits into parts that
    // fill a GPU in either tile size: where the tuning measured tiles of 128 faster there
    // (TileChoice::long_wide), an f32 product over 16,384 steps or more takes them whatever its
    // outputs; a shorter one, or where the tuning did not say so, or with HEARTH_TILES=64, takes
    // tiles of 64 as its outputs say. The CPU's products either way.
    use hearth_core::gpu::{KernelPaths, TileChoice};
    use hearth_core::ops::matmul::{matmul, LONG_REDUCTION};
    let mut rng = Rng::new(59);
    // (never 128 by the outputs alone)
    let tuned = |long_wide| TileChoice { wide_outputs: Some(usize::MAX), long_wide, ..Default::default() };
    let forced = TileChoice { side: Some(64), ..tuned(true) };
    for (choice, steps, tiles) in [(tuned(true), LONG_REDUCTION + 16, "128x128"), (tuned(true), LONG_REDUCTION - 8, "64x64"), (tuned(false), LONG_REDUCTION + 16, "64x64"), (forced, LONG_REDUCTION + 16, "64x64")] {
        let Some(own) = own_gpu() else { return };
        let ctx = &own.with_kernel_paths(KernelPaths::Gpu).with_tile_choice(choice);
        // dx (70 × 40) = dy (70 × steps) · w (steps × 40)
        let d = MatmulDims::new(70, steps, 40);
        let (dy, w) = (rng.vec_uniform(d.m * d.n, -1.0, 1.0), rng.vec_uniform(d.n * d.k, -1.0, 1.0));
        let out = poisoned(ctx, d.m * d.k);
        ctx.profile_begin();
        matmul(ctx, MatmulKind::BackwardInput, &out, &upload(ctx, &dy), &upload(ctx, &w), d, Accumulate::OVERWRITE).unwrap();
        let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
        let what = format!("{choice:?}, 70 × 40 over {steps} steps");
        assert_close(&what, &read(ctx, &out), &reference(MatmulKind::BackwardInput, &dy, &w, &d), ATOL, RTOL);
        assert!(kernels.keys().any(|k| k.starts_with("matmul_tiled:matmul_tiled [") && k.contains(&format!("[{tiles}"))), "{what}: {kernels:?}");
    }
}

#[test]
fn wide_tile_variants_match_cpu() {
    // The f32 tiles of 128 (and the f16 ones) in their variants: staging 16 reduction steps
    // per iteration (HEARTH_TILE_STEPS=16), 64 columns wide, each invocation summing 8 × 4
    // outputs (HEARTH_TILE_COLUMNS=64), and kept twice in workgroup memory, one barrier per
    // iteration (HEARTH_TILE_BUFFERS=2), in their combinations (16 steps in two tiles where
    // the adapter holds 33 KiB: lavapipe's 32 do not); their values loaded ahead and in turn;
    // forwards and both gradients, batched, off the tiles (a column past 64, one past 128),
    // with reductions ending inside a stage and split ones, and LoRA's term after the product
    // (its iterations go on alternating the two tiles).
    use hearth_core::gpu::{KernelPaths, TileChoice};
    use hearth_core::ops::matmul::wide_tile_bytes;
    let mut rng = Rng::new(43);
    for (steps, columns, buffers) in [(16, 128, 1), (8, 64, 1), (16, 64, 1), (8, 128, 2), (8, 64, 2), (16, 128, 2)] {
        for prefetch in [true, false] {
            let Some(own) = own_gpu() else { return };
            let tiles = TileChoice { side: Some(128), prefetch: Some(prefetch), steps: Some(steps), columns: Some(columns), buffers: Some(buffers), ..Default::default() };
            let ctx = &own.with_kernel_paths(KernelPaths::Gpu).with_tile_choice(tiles);
            if ctx.tile_buffers() != buffers {
                assert!(wide_tile_bytes(steps, buffers) > ctx.summary().max_workgroup_storage, "two tiles refused where they fit: {tiles:?}");
                continue;
            }
            assert_eq!((ctx.tile_steps(), ctx.tile_columns()), (steps, columns), "lavapipe's 32 KiB of workgroup memory hold 16 steps");
            ctx.profile_begin();
            for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
                for (m, n, k) in [(300, 270, 37), (300, 65, 37), (129, 129, 200), (10, 12, 3000), (260, 130, 16)] {
                    let d = MatmulDims::new(m, n, k);
                    check_on(ctx, kind, MatmulTiling::TiledWide, d, Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
                    if ctx.has_f16() && kind != MatmulKind::BackwardWeight {
                        check_on(ctx, kind, MatmulTiling::TiledWideF16, d, Accumulate::OVERWRITE, &mut rng);
                    }
                }
                let batched = MatmulDims { batch: 3, b_batched: true, ..MatmulDims::new(70, 100, 24) };
                check_on(ctx, kind, MatmulTiling::TiledWide, batched, Accumulate::OVERWRITE, &mut rng);
                if kind != MatmulKind::BackwardWeight {
                    let dropout = if kind == MatmulKind::Forward { (0.0, 0) } else { (0.3, 7) };
                    check_low_rank(ctx, kind, MatmulTiling::TiledWide, MatmulDims::new(260, 130, 37), Accumulate::OVERWRITE, 5, dropout, &mut rng);
                }
            }
            let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
            let variant = format!("[128x{columns}{}{}{}]", if prefetch { "" } else { ", loaded in turn" }, if steps == 16 { ", 16 steps" } else { "" }, if buffers == 2 { ", two tiles" } else { "" });
            assert!(kernels.keys().any(|k| k.starts_with("matmul_tiled:matmul_tiled") && k.ends_with(&variant)), "{variant}: {kernels:?}");
            assert!(kernels.keys().all(|k| !k.contains("tiled [") || k.ends_with(&variant)), "every tiled launch {variant}: {kernels:?}");
        }
    }
}

#[test]
fn tiles_loaded_in_turn_match_cpu() {
    // HEARTH_TILE_PREFETCH=0, or where the tile tuning chose it: the tiled kernels, f32 and
    // quantized, each step's values loaded just before they are staged instead of during the
    // previous step's sums; in both tile sizes, f32 and f16 tiles, forwards and both
    // gradients, off the tiles and with reductions ending inside a stage.
    use hearth_core::gpu::{KernelPaths, TileChoice};
    use hearth_core::ops::matmul_quant::{matmul_quant_with, GpuQuantWeight, QuantBlock};
    use hearth_core::quant::{QuantFormat, QuantTensor};
    let mut rng = Rng::new(41);
    for side in [64, 128] {
        let Some(own) = own_gpu() else { return };
        let ctx = &own.with_kernel_paths(KernelPaths::Gpu).with_tile_choice(TileChoice { side: Some(side), prefetch: Some(false), ..Default::default() });
        let (tiled, f16) = if side == 64 { (MatmulTiling::Tiled, MatmulTiling::TiledF16) } else { (MatmulTiling::TiledWide, MatmulTiling::TiledWideF16) };
        ctx.profile_begin();
        for kind in [MatmulKind::Forward, MatmulKind::BackwardInput, MatmulKind::BackwardWeight] {
            for (m, n, k) in [(300, 270, 37), (129, 72, 200), (10, 12, 3000)] {
                let d = MatmulDims::new(m, n, k);
                check_on(ctx, kind, tiled, d, Accumulate { alpha: 0.5, beta: 1.0 }, &mut rng);
                if ctx.has_f16() && kind != MatmulKind::BackwardWeight {
                    check_on(ctx, kind, f16, d, Accumulate::OVERWRITE, &mut rng);
                }
            }
        }
        for format in [QuantFormat::Q4_1, QuantFormat::Nf4] {
            let (m, n, k) = (70, 72, 576);
            let w = rng.vec_uniform(n * k, -1.0, 1.0);
            let t = QuantTensor::quantize(format, &w, n, k).unwrap();
            let (wd, gw) = (t.dequantize(), GpuQuantWeight::upload(ctx, &t).unwrap());
            let x = rng.vec_uniform(m * k, -1.0, 1.0);
            let y = poisoned(ctx, m * n);
            matmul_quant_with(ctx, QuantBlock::Tiled, MatmulKind::Forward, &y, &upload(ctx, &x), &gw, m, Accumulate::OVERWRITE, None).unwrap();
            assert_close(&format!("{format:?} forward, {side} tiles"), &read(ctx, &y), &reference(MatmulKind::Forward, &x, &wd, &MatmulDims::new(m, n, k)), ATOL, RTOL);
            let dy = rng.vec_uniform(m * n, -1.0, 1.0);
            let dx = poisoned(ctx, m * k);
            matmul_quant_with(ctx, QuantBlock::Tiled, MatmulKind::BackwardInput, &dx, &upload(ctx, &dy), &gw, m, Accumulate::OVERWRITE, None).unwrap();
            assert_close(&format!("{format:?} input gradient, {side} tiles"), &read(ctx, &dx), &reference(MatmulKind::BackwardInput, &dy, &wd, &MatmulDims::new(m, n, k)), ATOL, RTOL);
        }
        let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
        let variant = format!("[{side}x{side}, loaded in turn]");
        for shader in ["matmul_tiled:matmul_tiled", "matmul_q4_1:matmul_quant_forward_tiled", "matmul_nf4:matmul_quant_backward_input_tiled"] {
            assert!(kernels.keys().any(|k| k.starts_with(shader) && k.ends_with(&variant)), "{shader} {variant}: {kernels:?}");
        }
        // (outputs of 12 columns in tiles of 64 rows take 32 columns: THIN_COLUMNS)
        let in_turn = |k: &String| k.ends_with(&variant) || (side == 64 && k.ends_with("[64x32, loaded in turn]"));
        assert!(kernels.keys().all(|k| !k.contains("tiled [") || in_turn(k)), "every tiled launch {variant}: {kernels:?}");
    }
}
