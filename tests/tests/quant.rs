//! Block formats: CPU round trips, and each quantized matmul against the f32 reference over
//! the CPU-dequantized weight (so only kernel arithmetic, not quantization error, is tested).

use hearth_core::model::linear::Linear;
use hearth_core::ops::{cpu, embedding};
use hearth_core::ops::matmul::{Accumulate, MatmulKind};
use hearth_core::ops::matmul_quant::{matmul_quant, matmul_quant_blocked_input, matmul_quant_blocked_output, matmul_quant_gemv_gated, matmul_quant_gemv_normed, matmul_quant_with, GpuQuantWeight, QuantBlock};
use hearth_core::ops::swiglu::Activation;
use hearth_core::ops::matmul::{InputNorm, LowRankTerm, ColumnBlocks, TermLayout};
use hearth_core::model::weights::{Matrix, MatrixData};
use hearth_core::quant::{QuantFormat, QuantTensor};
use hearth_core::GpuContext;
use hearth_tests::*;

#[test]
fn quantize_round_trip_error_is_bounded() {
    let mut rng = Rng::new(1);
    let (rows, cols) = (300, 128); // 600 NF4 blocks: more than one group of 256
    let data = rng.vec_normal(rows * cols, 0.05);
    // Largest error relative to the tensor's absmax, per format (4-bit: half a step of ~1/7).
    for (format, bound) in [(QuantFormat::F16, 1e-3), (QuantFormat::Q8_0, 0.01), (QuantFormat::Q4_0, 0.1), (QuantFormat::Q4_1, 0.1), (QuantFormat::Nf4, 0.2)] {
        let t = QuantTensor::quantize(format, &data, rows, cols).unwrap();
        assert_eq!(t.q.len(), rows * cols / format.block_size() * format.block_bytes(), "{format:?} bytes");
        let back = t.dequantize();
        let amax = data.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let worst = data.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= bound * amax, "{format:?}: worst error {worst} vs absmax {amax}");
    }
}

#[test]
fn gathered_rows_are_the_dequantized_rows() {
    // A token embedding's lookup (Model::upload_embeddings): rows in any order, repeated,
    // scaled (Gemma), exactly the rows of the whole tensor dequantized, in every format; NF4's
    // from past its first absmax group of 256 blocks too, and its rows cut out (a split
    // lm_head) as if the whole tensor were dequantized first.
    let mut rng = Rng::new(2);
    let (rows, cols) = (300, 128);
    let data = rng.vec_normal(rows * cols, 0.05);
    let ids = [299u32, 0, 7, 299, 150];
    let formats = QuantFormat::ALL.map(Some).into_iter().chain([None]);
    for format in formats {
        let (held, dense) = match format {
            Some(f) => {
                let t = QuantTensor::quantize(f, &data, rows, cols).unwrap();
                let dense = t.dequantize();
                (MatrixData::Quant(t), dense)
            }
            None => (MatrixData::F32(data.clone()), data.clone()),
        };
        let m = Matrix { name: "embed".into(), rows, cols, data: held };
        for scale in [1.0, 2.5] {
            let mut bytes = vec![0u8; ids.len() * cols * 4];
            m.gather_rows(&ids, scale, |i, row| bytes[i * cols * 4..(i + 1) * cols * 4].copy_from_slice(row));
            let got: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap())).collect();
            for (i, &id) in ids.iter().enumerate() {
                let want: Vec<f32> = dense[id as usize * cols..][..cols].iter().map(|x| x * scale).collect();
                assert_eq!(got[i * cols..][..cols], want[..], "{format:?}, scale {scale}: row {id}");
            }
        }
        if format == Some(QuantFormat::Nf4) {
            let cut = m.rows_slice(260, 300).unwrap();
            let want = QuantTensor::quantize(QuantFormat::Nf4, &dense[260 * cols..300 * cols], 40, cols).unwrap();
            assert_eq!(cut.data, MatrixData::Quant(want), "NF4 rows 260..300");
        }
    }
}

#[test]
fn embeddings_gathered_on_the_gpu_are_the_host_rows() {
    // A tied lm_head's rows looked up on the GPU (Model::upload_embeddings): in every format
    // the rows the host's lookup gives, whole and with the head in two parts (NF4's parts
    // quantized again, as the model cuts them; a token's row comes from its part), scaled or
    // not. Tolerance: Q4_1's d·q + m and NF4's absmax may round once more or less on the GPU
    // (a fused multiply-add); the others are exact.
    with_gpu!(ctx => {
        let mut rng = Rng::new(3);
        let (rows, cols) = (300, 128);
        let data = rng.vec_normal(rows * cols, 0.05);
        let ids = [299u32, 0, 7, 299, 150, 160, 159, 1];
        let ids_buf = upload(ctx, &embedding::token_ids(&ids));
        for format in QuantFormat::ALL.map(Some).into_iter().chain([None]) {
            let whole = match format {
                Some(f) => Matrix { name: "embed".into(), rows, cols, data: MatrixData::Quant(QuantTensor::quantize(f, &data, rows, cols).unwrap()) },
                None => Matrix { name: "embed".into(), rows, cols, data: MatrixData::F32(data.clone()) },
            };
            for parts in [vec![(0, rows)], vec![(0, 160), (160, rows)]] {
                for scale in [1.0, 2.5] {
                    let out = poisoned(ctx, ids.len() * cols);
                    let mut want = vec![0.0; ids.len() * cols];
                    for &(first, end) in &parts {
                        let cut;
                        let part = if parts.len() == 1 {
                            &whole
                        } else {
                            cut = whole.rows_slice(first, end).unwrap();
                            &cut
                        };
                        let w = Linear::upload(ctx, part).unwrap();
                        w.gather(ctx, &out, &ids_buf, ids.len(), embedding::TableRows { first_row: first, scale }).unwrap();
                        for (i, &id) in ids.iter().enumerate().filter(|(_, &id)| (first..end).contains(&(id as usize))) {
                            part.gather_rows(&[id - first as u32], scale, |_, row| {
                                let row = row.chunks_exact(4).map(|b| f32::from_ne_bytes(b.try_into().unwrap()) as f64);
                                want[i * cols..(i + 1) * cols].iter_mut().zip(row).for_each(|(w, x)| *w = x);
                            });
                        }
                    }
                    assert_close(&format!("{format:?} gathered in parts {parts:?}, scale {scale}"), &read(ctx, &out), &want, 0.0, 1e-6);
                }
            }
        }
    });
}

#[test]
fn gguf_blocks_decode_like_llama_cpp() {
    // One Q4_0 block by hand: d = 0.5, nibbles 0..15 then 15..0 → (q − 8)·d.
    let mut q = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    q.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let t = QuantTensor::from_blocks(QuantFormat::Q4_0, 1, 32, q).unwrap();
    let want: Vec<f32> = (0..16).map(|j| (j as f32 - 8.0) * 0.5).chain((0..16).map(|j| (7.0 - j as f32) * 0.5)).collect();
    assert_eq!(t.dequantize(), want);
    let err = QuantTensor::from_blocks(QuantFormat::Q8_0, 2, 32, vec![0; 40]).unwrap_err();
    assert!(err.to_string().contains("needs 68 bytes, got 40"), "{err}");
}

#[test]
fn quantized_matmuls_match_f32_over_dequantized_weight() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(2);
        let started = std::time::Instant::now();
        for format in QuantFormat::ALL {
            // Partial blocks on every edge; (300, 36, 64) spans two large workgroups of rows;
            // the last two give the tiled kernels outputs of over 1024² (128 × 128 tiles) in
            // the forward and in the input gradient; f16 also takes K = 8·j, which its
            // forwards read in chunks of 8.
            let f16_only = (format == QuantFormat::F16).then_some((37, 30, 40));
            // (3, 70, 128) and (4, 70000, 64) are for the matrix-vector kernel (the latter's
            // rows pass one grid dimension); the latter's input gradient reduces over 70,000
            // rows of W, which the tiled kernel splits.
            for (m, n, k) in [(1, 1, 64), (37, 70, 128), (70, 36, 576), (300, 36, 64), (1030, 1040, 64), (1030, 40, 1024), (3, 70, 128), (4, 70000, 64)].into_iter().chain(f16_only) {
                let w = rng.vec_uniform(n * k, -1.0, 1.0);
                let t = QuantTensor::quantize(format, &w, n, k).unwrap();
                let wd = to_f64(&t.dequantize());
                let gw = GpuQuantWeight::upload(ctx, &t).unwrap();
                // Row: the one-row kernel, run here on every row of x.
                for block in [QuantBlock::Large, QuantBlock::Small, QuantBlock::Row, QuantBlock::Tiled, QuantBlock::Gemv] {
                    if block == QuantBlock::Row && !k.is_multiple_of(32) {
                        continue; // refused; one_row_forward_matches_for_any_k covers the fallback
                    }
                    if block == QuantBlock::Gemv && m > 16 {
                        continue; // refused: decoding's kernel
                    }
                    if m * n > 1_000_000 && block != QuantBlock::Gemv {
                        continue; // the matrix-vector kernel's grid test only
                    }
                    let what = format!("{format:?} {block:?} {m}×{n}×{k}");
                    // (each case's start, for a run that stalls: on the H200 this test passed
                    // its 100 s, where lavapipe takes 15; gpu.sh shows a lone test's output)
                    eprintln!("{:?} {what}", started.elapsed());
                    let x = rng.vec_uniform(m * k, -1.0, 1.0);
                    let y = poisoned(ctx, m * n);
                    matmul_quant_with(ctx, block, MatmulKind::Forward, &y, &upload(ctx, &x), &gw, m, Accumulate::OVERWRITE, None).unwrap();
                    let mut want = vec![0.0; m * n];
                    cpu::matmul_forward(&mut want, &to_f64(&x), &wd, m, n, k);
                    // f32 sums of R products of magnitude ≤ 1: atol 2e-4 up to R = 576,
                    // growing as √R beyond (the 70,000-row input gradient below).
                    let atol = |r: usize| 2e-4 * (r.max(576) as f64 / 576.0).sqrt();
                    assert_close(&format!("{what} forward"), &read(ctx, &y), &want, atol(k), 1e-4);
                    if matches!(block, QuantBlock::Row | QuantBlock::Gemv) {
                        continue; // forwards only
                    }

                    let dy = rng.vec_uniform(m * n, -1.0, 1.0);
                    let prior = rng.vec_uniform(m * k, -1.0, 1.0);
                    let dx = upload(ctx, &prior);
                    let res = matmul_quant_with(ctx, block, MatmulKind::BackwardInput, &dx, &upload(ctx, &dy), &gw, m, Accumulate::ADD, None);
                    if n % 4 != 0 {
                        let err = res.unwrap_err().to_string();
                        assert!(err.contains("must be a multiple of 4"), "{what}: {err}");
                        continue;
                    }
                    res.unwrap();
                    let mut want = vec![0.0; m * k];
                    cpu::matmul_backward_input(&mut want, &to_f64(&dy), &wd, m, n, k);
                    let want: Vec<f64> = want.iter().zip(&prior).map(|(a, &b)| a + b as f64).collect();
                    assert_close(&format!("{what} backward_input"), &read(ctx, &dx), &want, atol(n), 1e-4);
                }
            }
        }
    });
}

#[test]
fn low_rank_term_in_the_tiled_epilogue() {
    // QLoRA: LoRA's h·Bᵀ added in the quantized forward's launch and dropout(dh·A) in its
    // input gradient's (tiled kernels: off the tiles, ranks off the 8 staged steps, split
    // reductions), and launched after the product by the other blocks.
    with_gpu!(ctx => {
        let mut rng = Rng::new(23);
        for format in QuantFormat::ALL {
            for (m, n, k) in [(37, 72, 128), (1030, 40, 1024), (9, 2600, 64)] {
                let w = rng.vec_uniform(n * k, -1.0, 1.0);
                let t = QuantTensor::quantize(format, &w, n, k).unwrap();
                let wd = to_f64(&t.dequantize());
                let gw = GpuQuantWeight::upload(ctx, &t).unwrap();
                for (block, rank, dropout) in [(QuantBlock::Tiled, 3, (0.0, 0)), (QuantBlock::Tiled, 16, (0.3, 7)), (QuantBlock::Small, 5, (0.3, 8))] {
                    for kind in [MatmulKind::Forward, MatmulKind::BackwardInput] {
                        let (rows_in, width) = if kind == MatmulKind::Forward { (k, n) } else { (n, k) };
                        let x = rng.vec_uniform(m * rows_in, -1.0, 1.0);
                        let h = rng.vec_uniform(m * rank, -1.0, 1.0);
                        // V: B (width × rank) for the forward, A (rank × width) for dx
                        let v = rng.vec_uniform(rank * width, -1.0, 1.0);
                        let prior = rng.vec_uniform(m * width, -1.0, 1.0);
                        let out = upload(ctx, &prior);
                        let (hb, vb) = (upload(ctx, &h), upload(ctx, &v));
                        let term = LowRankTerm { h: &hb, v: &vb, rank, scale: 1.5, dropout, layout: TermLayout::Rows };
                        let acc = Accumulate { alpha: 1.0, beta: 0.5 };
                        matmul_quant_with(ctx, block, kind, &out, &upload(ctx, &x), &gw, m, acc, Some(term)).unwrap();
                        let mut product = vec![0.0; m * width];
                        let mut extra = vec![0.0; m * width];
                        if kind == MatmulKind::Forward {
                            cpu::matmul_forward(&mut product, &to_f64(&x), &wd, m, n, k);
                            cpu::matmul_forward(&mut extra, &to_f64(&h), &to_f64(&v), m, width, rank);
                        } else {
                            cpu::matmul_backward_input(&mut product, &to_f64(&x), &wd, m, n, k);
                            cpu::matmul_backward_input(&mut extra, &to_f64(&h), &to_f64(&v), m, rank, width);
                        }
                        let mut masked = vec![0.0; m * width];
                        cpu::dropout_forward(&mut masked, &extra, dropout.0, dropout.1, 0.0);
                        let want: Vec<f64> = (0..m * width).map(|i| product[i] + 1.5 * masked[i] + 0.5 * prior[i] as f64).collect();
                        let what = format!("{format:?} {block:?} {kind:?} {m}×{n}×{k} + rank {rank} term, dropout {dropout:?}");
                        assert_close(&what, &read(ctx, &out), &want, 4e-4, 1e-4);
                    }
                }
            }
        }
    });
}

/// The contexts whose tiled launches the tests in blocks run: the shared one's (f32 tiles)
/// and, where the adapter offers them, two of f16 matmuls on cooperative matrices (quant_coop.wgsl,
/// in tiles of 64 and of 128; tests/coop/run.sh runs these tests there), with a function that rounds the inputs as its
/// kernel does (to f16), so that what is compared is the accumulation.
fn tiled_contexts() -> Vec<(GpuContext, Rounding)> {
    let Some(own) = own_gpu() else { return Vec::new() };
    let mut contexts: Vec<(GpuContext, Rounding)> = vec![(own, |v| v)];
    if gpu_coop().is_some() {
        contexts.extend(own_gpu_coop_matmuls().map(|c| (c, to_f16 as Rounding)));
        contexts.extend(own_gpu_coop_wide_tiles().map(|c| (c, to_f16 as Rounding)));
    }
    contexts
}

/// How a kernel rounds its inputs (values as they are, or as f16 holds them).
type Rounding = fn(Vec<f32>) -> Vec<f32>;

/// QLoRA's input gradient through stacked weights (q, k, v; gate, up) from the parts' output
/// gradients in blocks apart, with LoRA's term in blocks too (and its dropout), in one tiled
/// launch (ops::matmul_quant::matmul_quant_blocked_input), across a split reduction: against
/// the CPU on the dense matrices, per format, on each of [`tiled_contexts`].
#[test]
fn tiled_input_gradient_reads_its_input_in_blocks() {
    for (own, round) in tiled_contexts() {
        let ctx = &own;
        let mut rng = Rng::new(27);
        for format in QuantFormat::ALL {
            for (m, widths, k) in [(37, vec![40, 16, 16], 64), (9, vec![3000, 2000], 64)] {
                let n: usize = widths.iter().sum();
                let t = QuantTensor::quantize(format, &rng.vec_uniform(n * k, -1.0, 1.0), n, k).unwrap();
                let gw = GpuQuantWeight::upload(ctx, &t).unwrap();
                let dense = round(rng.vec_uniform(m * n, -1.0, 1.0));
                let (dy, blocks) = in_blocks(&dense, m, &widths, 6);
                let (rank, count) = (4, widths.len());
                let h_dense = round(rng.vec_uniform(m * count * rank, -1.0, 1.0));
                let (h, h_blocks) = in_blocks(&h_dense, m, &vec![rank; count], 2);
                let v = round(rng.vec_uniform(count * rank * k, -1.0, 1.0));
                let (hb, vb) = (upload(ctx, &h), upload(ctx, &v));
                for dropout in [(0.0, 0), (0.3, 5)] {
                    let layout = TermLayout::Blocks(ColumnBlocks::new(&h_blocks).unwrap());
                    // (scale 2: exact in f16)
                    let term = LowRankTerm { h: &hb, v: &vb, rank: count * rank, scale: 2.0, dropout, layout };
                    let prior = rng.vec_uniform(m * k, -1.0, 1.0);
                    let out = upload(ctx, &prior);
                    matmul_quant_blocked_input(ctx, &out, &upload(ctx, &dy), ColumnBlocks::new(&blocks).unwrap(), &gw, m, 1.0, Some(term)).unwrap();
                    let (mut product, mut extra, mut masked) = (vec![0.0; m * k], vec![0.0; m * k], vec![0.0; m * k]);
                    cpu::matmul_backward_input(&mut product, &to_f64(&dense), &to_f64(&round(t.dequantize())), m, n, k);
                    cpu::matmul_backward_input(&mut extra, &to_f64(&h_dense), &to_f64(&v), m, count * rank, k);
                    cpu::dropout_forward(&mut masked, &extra, dropout.0, dropout.1, 0.0);
                    let want: Vec<f64> = (0..m * k).map(|i| product[i] + 2.0 * masked[i] + prior[i] as f64).collect();
                    // f32 sums of N products of magnitude ≤ 1 (as in the plain input gradient's check)
                    let atol = 2e-4 * (n.max(576) as f64 / 576.0).sqrt();
                    assert_close(&format!("{format:?} {m}×{widths:?}×{k} in blocks, dropout {dropout:?}, f16 matmuls {}", ctx.f16_matmuls()), &read(ctx, &out), &want, atol, 1e-4);
                }
            }
        }
    }
}

/// QLoRA's forward through stacked weights into the parts' outputs in blocks apart, with the
/// LoRA term of each part, or of all but the middle part or the last (x·Aᵀ in blocks, B's
/// stacked by rows), in one tiled launch (ops::matmul_quant::matmul_quant_blocked_output),
/// also across a split reduction: against the CPU per part, per format, the gaps between the
/// blocks untouched; on each of [`tiled_contexts`].
#[test]
fn tiled_forward_writes_its_output_in_blocks() {
    for (own, round) in tiled_contexts() {
        let ctx = &own;
        let mut rng = Rng::new(29);
        // (the second: a split reduction, its parts summed into the blocks)
        for (format, (m, k)) in QuantFormat::ALL.into_iter().flat_map(|f| [(f, (37, 64)), (f, (9, 1024))]) {
            let widths = vec![40, 16, 16];
            let n: usize = widths.iter().sum();
            let t = QuantTensor::quantize(format, &rng.vec_uniform(n * k, -1.0, 1.0), n, k).unwrap();
            let gw = GpuQuantWeight::upload(ctx, &t).unwrap();
            let x = round(rng.vec_uniform(m * k, -1.0, 1.0));
            let xb = upload(ctx, &x);
            let (gapped, blocks) = in_blocks(&vec![0.0; m * n], m, &widths, 5);
            let mut product = vec![0.0; m * n];
            cpu::matmul_forward(&mut product, &to_f64(&x), &to_f64(&round(t.dequantize())), m, n, k);
            for adapted in [[true; 3], [true, false, true], [true, true, false]] {
                let (term, h, v) = BlockedTerm::new(ctx, &mut rng, m, &widths, &adapted, 4);
                let out = upload(ctx, &gapped);
                matmul_quant_blocked_output(ctx, &out, ColumnBlocks::new(&blocks).unwrap(), &xb, &gw, m, Some(term.of(&h, &v))).unwrap();
                let mut want = product.clone();
                term.add_to(&mut want, m);
                let got = read(ctx, &out);
                let what = format!("{format:?} {m}×{widths:?}×{k} forward into blocks, the term of {adapted:?}, f16 matmuls {}", ctx.f16_matmuls());
                assert_close(&what, &from_blocks(&got, m, &blocks), &want, 2e-4 * (k as f64 / 64.0).sqrt(), 1e-4);
                assert!(got.iter().zip(&gapped).all(|(g, p)| p.is_finite() || g.is_nan()), "{what}: wrote between the blocks");
            }
        }
    }
}

#[test]
fn gemv_adds_the_low_rank_term_in_its_launch() {
    // decoding with an adapter: the matrix-vector kernel adds LoRA's h·Bᵀ in its launch, over
    // ranks of fewer and more than its 64 invocations (on a context of its own, so that its
    // launches are counted alone); then without a term; in each reduction variant, which the
    // launch's file names
    for own in hearth_tests::own_gpu_each_reduction() {
        let ctx = &own;
        let mut rng = Rng::new(25);
        for format in QuantFormat::ALL {
            for (m, n, k, rank) in [(1, 72, 128, 16), (3, 40, 1024, 70), (4, 9, 64, 1), (9, 40, 128, 16), (16, 9, 64, 3)] {
                let w = rng.vec_uniform(n * k, -1.0, 1.0);
                let t = QuantTensor::quantize(format, &w, n, k).unwrap();
                let gw = GpuQuantWeight::upload(ctx, &t).unwrap();
                let (x, h, v) = (rng.vec_uniform(m * k, -1.0, 1.0), rng.vec_uniform(m * rank, -1.0, 1.0), rng.vec_uniform(n * rank, -1.0, 1.0));
                let prior = rng.vec_uniform(m * n, -1.0, 1.0);
                let out = upload(ctx, &prior);
                let (hb, vb) = (upload(ctx, &h), upload(ctx, &v));
                let term = LowRankTerm { h: &hb, v: &vb, rank, scale: 1.5, dropout: (0.0, 0), layout: TermLayout::Rows };
                ctx.profile_begin();
                matmul_quant_with(ctx, QuantBlock::Gemv, MatmulKind::Forward, &out, &upload(ctx, &x), &gw, m, Accumulate { alpha: 1.0, beta: 0.5 }, Some(term)).unwrap();
                let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
                assert_eq!(kernels.values().map(|k| k.launches).sum::<u64>(), 1, "{format:?} gemv + rank {rank} term");
                assert!(kernels.keys().all(|name| name.contains("_subgroups:") == ctx.subgroup_reductions()), "{kernels:?}");
                let (mut product, mut extra) = (vec![0.0; m * n], vec![0.0; m * n]);
                cpu::matmul_forward(&mut product, &to_f64(&x), &to_f64(&t.dequantize()), m, n, k);
                cpu::matmul_forward(&mut extra, &to_f64(&h), &to_f64(&v), m, n, rank);
                let want: Vec<f64> = (0..m * n).map(|i| product[i] + 1.5 * extra[i] + 0.5 * prior[i] as f64).collect();
                assert_close(&format!("{format:?} Gemv {m}×{n}×{k} + rank {rank} term"), &read(ctx, &out), &want, 4e-4, 1e-4);
                let out = poisoned(ctx, m * n);
                matmul_quant_with(ctx, QuantBlock::Gemv, MatmulKind::Forward, &out, &upload(ctx, &x), &gw, m, Accumulate::OVERWRITE, None).unwrap();
                assert_close(&format!("{format:?} Gemv {m}×{n}×{k}"), &read(ctx, &out), &product, 4e-4, 1e-4);
            }
        }
    }
}

#[test]
fn gemv_gated_is_both_products_and_the_activation() {
    // decoding's gated MLP in one launch with gate's and up's rows stacked in one quantized
    // weight: every format, both activations, 1 to 16 rows
    with_each_reduction!(ctx => {
        let mut rng = Rng::new(24);
        for format in QuantFormat::ALL {
            for act in [Activation::Silu, Activation::GeluTanh] {
                for (m, n, k) in [(1, 96, 64), (4, 40, 1024), (2, 1536, 576), (14, 40, 128)] {
                    let (x, w) = (rng.vec_uniform(m * k, -1.0, 1.0), rng.vec_uniform(2 * n * k, -1.0, 1.0));
                    let t = QuantTensor::quantize(format, &w, 2 * n, k).unwrap();
                    let out = poisoned(ctx, m * n);
                    matmul_quant_gemv_gated(ctx, act, &out, &upload(ctx, &x), &GpuQuantWeight::upload(ctx, &t).unwrap(), m, None, None).unwrap();
                    let want = gated_reference(act == Activation::GeluTanh, &to_f64(&x), &t.dequantize(), m, n, k, None);
                    assert_close(&format!("{format:?} {act:?} {m}×{n}×{k}"), &read(ctx, &out), &want, 4e-4, 1e-4);
                }
            }
        }
    });
}

#[test]
fn gemv_normed_is_the_norm_then_the_product() {
    // decoding's norms before q/k/v and before gate/up inside the quantized matrix-vector
    // launch: every format that stacks (NF4 is refused by name), the plain and the gated
    // kernel, 1 to 16 rows of a residual stream far from unit RMS
    with_each_reduction!(ctx => {
        let mut rng = Rng::new(32);
        let eps = 1e-6;
        for format in QuantFormat::ALL {
            for (m, n, k) in [(1, 96, 64), (4, 40, 1024), (2, 1536, 576), (8, 96, 64), (16, 40, 128)] {
                let (x, nw) = (rng.vec_uniform(m * k, -3.0, 3.0), rng.vec_uniform(k, 0.5, 1.5));
                let (xb, nwb) = (upload(ctx, &x), upload(ctx, &nw));
                let norm = InputNorm { weight: &nwb, eps };
                let plain = QuantTensor::quantize(format, &rng.vec_uniform(n * k, -1.0, 1.0), n, k).unwrap();
                let stacked = QuantTensor::quantize(format, &rng.vec_uniform(2 * n * k, -1.0, 1.0), 2 * n, k).unwrap();
                let out = poisoned(ctx, m * n);
                let normed = matmul_quant_gemv_normed(ctx, &out, None, &xb, &GpuQuantWeight::upload(ctx, &plain).unwrap(), m, norm, None);
                if format == QuantFormat::Nf4 {
                    let err = normed.unwrap_err();
                    assert!(err.to_string().contains("Nf4 weights have no matrix-vector kernel with an input norm"), "{err}");
                    break;
                }
                normed.unwrap();
                let xn = rmsnorm_reference(&x, &nw, m, k, eps);
                let mut want = vec![0.0; m * n];
                cpu::matmul_forward(&mut want, &xn, &to_f64(&plain.dequantize()), m, n, k);
                assert_close(&format!("{format:?} normed {m}×{n}×{k}"), &read(ctx, &out), &want, 4e-4, 1e-4);
                // the output in three blocks apart (q, k and v of a few tokens)
                let (blocks, layout, len) = three_blocks(m, n);
                let out = poisoned(ctx, len);
                matmul_quant_gemv_normed(ctx, &out, Some(blocks), &xb, &GpuQuantWeight::upload(ctx, &plain).unwrap(), m, norm, None).unwrap();
                assert_close(&format!("{format:?} normed {m}×{n}×{k}, out in blocks"), &from_blocks(&read(ctx, &out), m, &layout), &want, 4e-4, 1e-4);
                let out = poisoned(ctx, m * n);
                matmul_quant_gemv_gated(ctx, Activation::Silu, &out, &xb, &GpuQuantWeight::upload(ctx, &stacked).unwrap(), m, Some(norm), None).unwrap();
                let want = gated_reference(false, &xn, &stacked.dequantize(), m, n, k, None);
                assert_close(&format!("{format:?} normed gated {m}×{n}×{k}"), &read(ctx, &out), &want, 4e-4, 1e-4);
            }
        }
    });
}

/// The quantized forward in f16 tiles (`QuantBlock::TiledF16`: inp and the decoded weight
/// rounded to f16 as they are staged, products summed in f32), where the adapter has
/// shader-f16 (lavapipe has; SwiftShader has not, and refuses it): [`check_f16_quantized`].
#[test]
fn f16_tiles_quantized_match_where_offered() {
    with_gpu!(ctx => {
        let small = GpuQuantWeight::upload(ctx, &QuantTensor::quantize(QuantFormat::F16, &[0.5; 64], 2, 32).unwrap()).unwrap();
        if !ctx.has_f16() {
            let err = matmul_quant_with(ctx, QuantBlock::TiledF16, MatmulKind::Forward, &poisoned(ctx, 2), &upload(ctx, &[0.0; 32]), &small, 1, Accumulate::OVERWRITE, None).unwrap_err();
            assert!(err.to_string().contains("shader-f16"), "{err}");
            eprintln!("SKIPPED: this adapter has no shader-f16 (the f16 tiles were refused)");
            return;
        }
        // (a context of f16 matmuls, for the launch in blocks, which takes the context's tiles)
        check_f16_quantized(ctx, &own_gpu().unwrap().with_f16_matmuls(true), QuantBlock::TiledF16);
    });
}

/// The quantized forward and input gradient on cooperative matrices (matmul/quant_coop.wgsl),
/// where the adapter offers them in its form (lavapipe from Mesa 26.1: tests/coop/run.sh runs
/// this), as [`check_f16_quantized`]; refused on a context without them.
#[test]
fn coop_quantized_matches_where_offered() {
    with_gpu!(ctx => {
        if !ctx.has_cooperative_matrix() {
            let small = GpuQuantWeight::upload(ctx, &QuantTensor::quantize(QuantFormat::Q8_0, &[0.5; 64], 2, 32).unwrap()).unwrap();
            let err = matmul_quant_with(ctx, QuantBlock::Coop, MatmulKind::Forward, &poisoned(ctx, 2), &upload(ctx, &[0.0; 32]), &small, 1, Accumulate::OVERWRITE, None).unwrap_err();
            assert!(err.to_string().contains("no cooperative matrices"), "{err}");
        }
    });
    let Some(ctx) = gpu_coop() else {
        eprintln!("SKIPPED: this adapter has no cooperative matrices in matmul_coop.wgsl's form");
        return;
    };
    check_f16_quantized(ctx, &own_gpu_coop_matmuls().expect("a context of f16 matmuls on cooperative matrices"), QuantBlock::Coop);
    let wide = own_gpu_coop_wide_tiles().expect("a context of f16 matmuls on cooperative matrices");
    check_f16_quantized(&wide, &wide, QuantBlock::Coop);
    // workgroups sized for other subgroups than the adapter's (a subgroup's blocks in turn,
    // blocks computed by several subgroups), in either tile
    for other in coop_contexts_sized_otherwise() {
        check_f16_quantized(&other, &other, QuantBlock::Coop);
    }
}

/// A kernel that rounds its inputs to f16 (`block`) on `ctx`, and on `f16_matmuls` (a context
/// of f16 matmuls that runs it) where the launch takes the context's kernel: the CPU's inputs
/// are rounded the same way, so what is compared is the f32 accumulation: ragged edges, large
/// outputs, a split reduction, with and without LoRA's term (scale 2, exact in f16) and its
/// dropout, accumulating. The input gradient, its rows scaled by powers of two
/// (pieces/row_scales.wgsl), on output gradients of rows from 1e-9 to 1e5
/// (GRADIENT_ROW_MAGNITUDES), with LoRA's term and its dropout, split over a long reduction,
/// and reading its input in blocks: within 1.5e-3 of Σ|products| of the CPU's on the
/// unrounded inputs. Past f16's range the staged values saturate at ±65504 instead of
/// becoming inf.
fn check_f16_quantized(ctx: &GpuContext, f16_matmuls: &GpuContext, block: QuantBlock) {
    let mut rng = Rng::new(29);
    for format in QuantFormat::ALL {
        for (m, n, k) in [(37, 70, 128), (1030, 1040, 64), (10, 36, 1024)] {
            let t = QuantTensor::quantize(format, &rng.vec_uniform(n * k, -1.0, 1.0), n, k).unwrap();
            let wd = to_f64(&to_f16(t.dequantize()));
            let gw = GpuQuantWeight::upload(ctx, &t).unwrap();
            for (rank, dropout) in [(0, (0.0, 0)), (16, (0.3, 7))] {
                let x = to_f16(rng.vec_uniform(m * k, -1.0, 1.0));
                let (h, v) = (to_f16(rng.vec_uniform(m * rank, -1.0, 1.0)), to_f16(rng.vec_uniform(rank * n, -1.0, 1.0)));
                let prior = rng.vec_uniform(m * n, -1.0, 1.0);
                let out = upload(ctx, &prior);
                let (hb, vb) = (upload(ctx, &h), upload(ctx, &v));
                let term = (rank > 0).then_some(LowRankTerm { h: &hb, v: &vb, rank, scale: 2.0, dropout, layout: TermLayout::Rows });
                let acc = Accumulate { alpha: 1.0, beta: 0.5 };
                matmul_quant_with(ctx, block, MatmulKind::Forward, &out, &upload(ctx, &x), &gw, m, acc, term).unwrap();
                let (mut product, mut extra, mut masked) = (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
                cpu::matmul_forward(&mut product, &to_f64(&x), &wd, m, n, k);
                cpu::matmul_forward(&mut extra, &to_f64(&h), &to_f64(&v), m, n, rank);
                cpu::dropout_forward(&mut masked, &extra, dropout.0, dropout.1, 0.0);
                let want: Vec<f64> = (0..m * n).map(|i| product[i] + 2.0 * masked[i] + 0.5 * prior[i] as f64).collect();
                // f32 sums of products of magnitude ≤ 1, as in the f32 tiles' test
                let what = format!("{format:?} {block:?} {m}×{n}×{k} + rank {rank} term, dropout {dropout:?}");
                assert_close(&what, &read(ctx, &out), &want, 4e-4, 1e-4);
            }
        }
    }
    let abs = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.abs()).collect() };
    for format in QuantFormat::ALL {
        for (m, n, k, rank, dropout, blocked) in [(37, 72, 128, 0, (0.0, 0), false), (10, 2048, 64, 0, (0.0, 0), false), (70, 40, 128, 16, (0.3, 7), false), (45, 48, 64, 8, (0.0, 0), true)] {
            let ctx = if blocked { f16_matmuls } else { ctx };
            let t = QuantTensor::quantize(format, &rng.vec_uniform(n * k, -1.0, 1.0), n, k).unwrap();
            let wd = to_f64(&t.dequantize());
            let gw = GpuQuantWeight::upload(ctx, &t).unwrap();
            let dy = rows_at_magnitudes(rng.vec_uniform(m * n, -1.0, 1.0), n);
            // dh's rows 3 magnitudes on from dy's: the scale of a row is the larger's
            let dh = rows_at_magnitudes(rng.vec_uniform((m + 3) * rank, -1.0, 1.0), rank)[3 * rank..].to_vec();
            let lora_a = rng.vec_uniform(rank * k, -1.0, 1.0);
            let (hb, vb) = (upload(ctx, &dh), upload(ctx, &lora_a));
            let term = (rank > 0).then_some(LowRankTerm { h: &hb, v: &vb, rank, scale: 2.0, dropout, layout: TermLayout::Rows });
            let out = poisoned(ctx, m * k);
            if blocked {
                // dy as three parts' gradients stored apart (a stacked weight's)
                let (parts, blocks) = in_blocks(&dy, m, &[n / 2, n / 4, n / 4], 5);
                let blocks = ColumnBlocks::new(&blocks).unwrap();
                matmul_quant_blocked_input(ctx, &out, &upload(ctx, &parts), blocks, &gw, m, 0.0, term).unwrap();
            } else {
                matmul_quant_with(ctx, block, MatmulKind::BackwardInput, &out, &upload(ctx, &dy), &gw, m, Accumulate::OVERWRITE, term).unwrap();
            }
            let (mut product, mut sizes, mut extra, mut extra_sizes, mut masked) = (vec![0.0; m * k], vec![0.0; m * k], vec![0.0; m * k], vec![0.0; m * k], vec![0.0; m * k]);
            let (dy, dh, lora_a) = (to_f64(&dy), to_f64(&dh), to_f64(&lora_a));
            cpu::matmul_backward_input(&mut product, &dy, &wd, m, n, k);
            cpu::matmul_backward_input(&mut sizes, &abs(&dy), &abs(&wd), m, n, k);
            cpu::matmul_backward_input(&mut extra, &dh, &lora_a, m, rank, k);
            cpu::matmul_backward_input(&mut extra_sizes, &abs(&dh), &abs(&lora_a), m, rank, k);
            cpu::dropout_forward(&mut masked, &extra, dropout.0, dropout.1, 0.0);
            let want: Vec<f64> = (0..m * k).map(|i| product[i] + 2.0 * masked[i]).collect();
            let bound: Vec<f64> = (0..m * k).map(|i| sizes[i] + 2.0 * extra_sizes[i] / (1.0 - dropout.0 as f64)).collect();
            let what = format!("{format:?} {block:?} input gradient {m}×{n}×{k} + rank {rank} term, dropout {dropout:?}, in blocks {blocked}");
            assert_within_products(&what, &read(ctx, &out), &want, &bound, 1.5e-3);
        }
    }
    let small = GpuQuantWeight::upload(ctx, &QuantTensor::quantize(QuantFormat::F16, &[0.5; 64], 2, 32).unwrap()).unwrap();
    let x = upload(ctx, &[[1e5f32; 1].as_slice(), &[0.0; 31]].concat());
    let y = poisoned(ctx, 2);
    matmul_quant_with(ctx, block, MatmulKind::Forward, &y, &x, &small, 1, Accumulate::OVERWRITE, None).unwrap();
    assert_eq!(read(ctx, &y), [65504.0 * 0.5; 2]);
}

#[test]
fn one_row_forward_matches_for_any_k() {
    // matmul_quant picks the row kernel for one row when K is a multiple of 32 and the small
    // block otherwise (f16 allows K = 8·j); both must match the f32 matmul.
    with_gpu!(ctx => {
        let mut rng = Rng::new(5);
        for (format, n, k) in [(QuantFormat::F16, 6, 40), (QuantFormat::F16, 9, 96), (QuantFormat::Q8_0, 70, 576), (QuantFormat::Nf4, 33, 128)] {
            let w = rng.vec_uniform(n * k, -1.0, 1.0);
            let t = QuantTensor::quantize(format, &w, n, k).unwrap();
            let gw = GpuQuantWeight::upload(ctx, &t).unwrap();
            let x = rng.vec_uniform(k, -1.0, 1.0);
            let y = poisoned(ctx, n);
            matmul_quant(ctx, MatmulKind::Forward, &y, &upload(ctx, &x), &gw, 1, Accumulate::OVERWRITE).unwrap();
            let mut want = vec![0.0; n];
            cpu::matmul_forward(&mut want, &to_f64(&x), &to_f64(&t.dequantize()), 1, n, k);
            assert_close(&format!("{format:?} 1×{n}×{k}"), &read(ctx, &y), &want, 2e-4, 1e-4);
        }
        let err = matmul_quant_with(ctx, QuantBlock::Row, MatmulKind::BackwardInput, &poisoned(ctx, 40), &poisoned(ctx, 6), &GpuQuantWeight::upload(ctx, &QuantTensor::quantize(QuantFormat::F16, &[0.0; 240], 6, 40).unwrap()).unwrap(), 1, Accumulate::OVERWRITE, None);
        assert!(err.is_err(), "the row kernel has no input gradient");
    });
}

/// The quantized matrix-vector kernels with a term over stacked weights (decoding with an
/// adapter over q, k and v as one matmul, also with k or v left alone, and over gate and up):
/// each adapted part's h·Bᵀ from that part's h, every format, plain and gated, and with the
/// input norm (every format that stacks: not NF4); against the CPU over the dequantized
/// weights.
#[test]
fn gemv_adds_a_term_over_stacked_weights() {
    use hearth_core::ops::matmul::StackedTerm;
    with_each_reduction!(ctx => {
        let mut rng = Rng::new(44);
        for format in QuantFormat::ALL {
            // (the second: k left alone; the third: v)
            for (m, rank, sizes, skip) in [(1, 16, [64, 32, 32], None), (4, 3, [32, 16, 8], None), (1, 16, [64, 32, 32], Some(1)), (4, 3, [32, 16, 8], Some(2)), (11, 5, [32, 16, 8], Some(1))] {
                let (rows, k) = (sizes.iter().sum::<usize>(), 128);
                let (starts, skipped) = match skip {
                    None => ([sizes[0], sizes[0] + sizes[1]], [0, 0]),
                    Some(1) => ([sizes[0] + sizes[1], usize::MAX], [sizes[0], sizes[1]]),
                    _ => ([sizes[0], usize::MAX], [sizes[0] + sizes[1], sizes[2]]),
                };
                let stacked = StackedTerm { h_row: 3 * rank, h_part: rank, starts, skipped };
                let x = rng.vec_uniform(m * k, -1.0, 1.0);
                // v long enough for the stacked rows and for gate's and up's (2 × the first part)
                let (h, v) = (rng.vec_uniform(m * 3 * rank, -1.0, 1.0), rng.vec_uniform(rows.max(2 * sizes[0]) * rank, -1.0, 1.0));
                let (xb, hb, vb) = (upload(ctx, &x), upload(ctx, &h), upload(ctx, &v));
                let term = LowRankTerm { h: &hb, v: &vb, rank, scale: 0.5, dropout: (0.0, 0), layout: TermLayout::Stacked(stacked) };
                let t = QuantTensor::quantize(format, &rng.vec_uniform(rows * k, -1.0, 1.0), rows, k).unwrap();
                let out = poisoned(ctx, m * rows);
                matmul_quant_with(ctx, QuantBlock::Gemv, MatmulKind::Forward, &out, &xb, &GpuQuantWeight::upload(ctx, &t).unwrap(), m, Accumulate::OVERWRITE, Some(term)).unwrap();
                let mut want = vec![0.0; m * rows];
                cpu::matmul_forward(&mut want, &to_f64(&x), &to_f64(&t.dequantize()), m, rows, k);
                let extra = stacked_term_reference(&h, &v, m, rows, rank, 0.5, stacked.h_row, stacked.h_part, stacked.starts, stacked.skipped);
                let want: Vec<f64> = want.iter().zip(&extra).map(|(a, b)| a + b).collect();
                assert_close(&format!("{format:?} {m}×{rows}×{k} + rank {rank} term over {sizes:?}, part {skip:?} left alone"), &read(ctx, &out), &want, 4e-4, 1e-4);
                let (nw, eps) = (rng.vec_uniform(k, 0.5, 1.5), 1e-5);
                let nwb = upload(ctx, &nw);
                let norm = InputNorm { weight: &nwb, eps };
                let xn = rmsnorm_reference(&x, &nw, m, k, eps);
                if format != QuantFormat::Nf4 {
                    let out = poisoned(ctx, m * rows);
                    matmul_quant_gemv_normed(ctx, &out, None, &xb, &GpuQuantWeight::upload(ctx, &t).unwrap(), m, norm, Some(term)).unwrap();
                    let mut want = vec![0.0; m * rows];
                    cpu::matmul_forward(&mut want, &xn, &to_f64(&t.dequantize()), m, rows, k);
                    let want: Vec<f64> = want.iter().zip(&extra).map(|(a, b)| a + b).collect();
                    assert_close(&format!("{format:?} normed {m}×{rows}×{k} + rank {rank} term"), &read(ctx, &out), &want, 4e-4, 1e-4);
                }
                let n = sizes[0];
                let gated = StackedTerm { starts: [n, usize::MAX], skipped: [0, 0], ..stacked };
                let t = QuantTensor::quantize(format, &rng.vec_uniform(2 * n * k, -1.0, 1.0), 2 * n, k).unwrap();
                let out = poisoned(ctx, m * n);
                matmul_quant_gemv_gated(ctx, Activation::Silu, &out, &xb, &GpuQuantWeight::upload(ctx, &t).unwrap(), m, None, Some(LowRankTerm { layout: TermLayout::Stacked(gated), ..term })).unwrap();
                let extra = stacked_term_reference(&h, &v, m, 2 * n, rank, 0.5, gated.h_row, gated.h_part, gated.starts, gated.skipped);
                let want = gated_reference(false, &to_f64(&x), &t.dequantize(), m, n, k, Some(&extra));
                assert_close(&format!("{format:?} gated {m}×{n}×{k} + rank {rank} term"), &read(ctx, &out), &want, 4e-4, 1e-4);
                if format != QuantFormat::Nf4 {
                    let out = poisoned(ctx, m * n);
                    matmul_quant_gemv_gated(ctx, Activation::Silu, &out, &xb, &GpuQuantWeight::upload(ctx, &t).unwrap(), m, Some(norm), Some(LowRankTerm { layout: TermLayout::Stacked(gated), ..term })).unwrap();
                    let want = gated_reference(false, &xn, &t.dequantize(), m, n, k, Some(&extra));
                    assert_close(&format!("{format:?} normed gated {m}×{n}×{k} + rank {rank} term"), &read(ctx, &out), &want, 4e-4, 1e-4);
                }
            }
        }
    });
}
