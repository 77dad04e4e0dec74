//! Every non-matmul kernel against its CPU reference on random shapes, and every CPU
//! backward against central finite differences in f64.

use hearth_core::ops::attention::{attention_backward_with, attention_decode, attention_decode_batch, attention_forward_cached_with, decode_batch_table, decode_scratch_len, BatchSeq, DecodeBatch, attention_forward_with, cached_row_by_row, rope_fits, segment_runs, AttentionDims, AttentionKernels, DecodeToken, Segments};
use hearth_core::ops::cpu::{self, AttnSizes};
use hearth_core::ops::block_copy::{block_copy, Columns};
use hearth_core::ops::swiglu::Activation;
use hearth_core::ops::{adamw, cross_entropy, dropout, embedding, fma_peak, grad_norm, lora, residual, rmsnorm, rope, swiglu};
use hearth_tests::*;

// Element-wise kernels: f32 rounding of a few operations.
const ELEM: (f64, f64) = (1e-5, 1e-5);
// Reductions over rows of up to a few hundred values, exp/log: a little looser.
const ROW: (f64, f64) = (2e-5, 1e-4);
// Attention sums T·HS products and exponentials in f32.
const ATTN: (f64, f64) = (1e-4, 1e-3);

fn u(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.vec_uniform(n, -1.0, 1.0)
}

#[test]
fn embedding_matches_cpu() {
    // an f32 table whole, and in two parts (a split lm_head) each launch writing its tokens'
    // rows, scaled (Gemma) or not: exactly the table's rows
    with_gpu!(ctx => {
        let mut rng = Rng::new(1);
        for _ in 0..3 {
            let (n, c, v) = (1 + rng.below(50), 1 + rng.below(70), 2 + rng.below(100));
            let tokens: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
            let wte = u(&mut rng, v * c);
            let ids = upload(ctx, &embedding::token_ids(&tokens));
            let scale = if rng.below(2) == 0 { 1.0 } else { 2.5 };
            let split = 1 + rng.below(v - 1);
            for parts in [vec![(0, v)], vec![(0, split), (split, v)]] {
                let out = poisoned(ctx, n * c);
                for &(first, end) in &parts {
                    let rows = embedding::TableRows { first_row: first, scale };
                    embedding::embedding_forward(ctx, &out, &ids, &upload(ctx, &wte[first * c..end * c]), n, c, end - first, rows).unwrap();
                }
                let mut want = vec![0.0; n * c];
                cpu::embedding_forward(&mut want, &tokens, &to_f64(&wte), c);
                want.iter_mut().for_each(|x| *x *= scale as f64);
                assert_close(&format!("embedding in parts {parts:?}"), &read(ctx, &out), &want, 0.0, 0.0);
            }
        }
    });
}

#[test]
fn block_copy_matches_cpu() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(21);
        for _ in 0..4 {
            let (rows, cols) = (1 + rng.below(40), 1 + rng.below(300));
            let (src_w, dst_w) = (cols + rng.below(50), cols + rng.below(500));
            let (src_col, dst_col) = (rng.below(src_w - cols + 1), rng.below(dst_w - cols + 1));
            let (src, dst) = (u(&mut rng, rows * src_w), u(&mut rng, rows * dst_w));
            let out = upload(ctx, &dst);
            let (d, s) = (Columns { stride: dst_w, col: dst_col }, Columns { stride: src_w, col: src_col });
            block_copy(ctx, &out, d, &upload(ctx, &src), s, rows, cols).unwrap();
            // everything outside the block keeps its value
            let mut want = to_f64(&dst);
            cpu::block_copy(&mut want, dst_w, dst_col, &to_f64(&src), src_w, src_col, rows, cols);
            assert_close("block_copy", &read(ctx, &out), &want, 0.0, 0.0);
        }
        let err = block_copy(ctx, &poisoned(ctx, 8), Columns { stride: 4, col: 2 }, &poisoned(ctx, 8), Columns { stride: 4, col: 0 }, 2, 3);
        assert!(err.unwrap_err().to_string().contains("dst columns 2..5 pass its width 4"));
    });
}

#[test]
fn residual_and_swiglu_match_cpu() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(2);
        for n in [1, 255, 1000, 70_001] {
            let (a, b, g) = (u(&mut rng, n), u(&mut rng, n), u(&mut rng, n));
            let out = poisoned(ctx, n);
            residual::residual_forward(ctx, &out, &upload(ctx, &a), &upload(ctx, &b), n).unwrap();
            let mut want = vec![0.0; n];
            cpu::residual_forward(&mut want, &to_f64(&a), &to_f64(&b));
            assert_close("residual", &read(ctx, &out), &want, ELEM.0, ELEM.1);

            // inputs up to ±4 (a gate beyond the tanh's saturation too)
            let g4: Vec<f32> = a.iter().map(|x| 4.0 * x).collect();
            type Cpu = fn(&mut [f64], &[f64], &[f64]);
            type CpuBack = fn(&mut [f64], &mut [f64], &[f64], &[f64], &[f64]);
            let acts: [(Activation, Cpu, CpuBack); 2] = [
                (Activation::Silu, cpu::swiglu_forward, cpu::swiglu_backward),
                (Activation::GeluTanh, cpu::geglu_forward, cpu::geglu_backward),
            ];
            for (act, fwd, back) in acts {
                swiglu::gated_forward(ctx, act, &out, &upload(ctx, &g4), &upload(ctx, &b), n).unwrap();
                fwd(&mut want, &to_f64(&g4), &to_f64(&b));
                assert_close(&format!("{act:?} forward"), &read(ctx, &out), &want, ELEM.0, ELEM.1);

                let (dg, du) = (poisoned(ctx, n), poisoned(ctx, n));
                swiglu::gated_backward(ctx, act, &dg, &du, &upload(ctx, &g), &upload(ctx, &g4), &upload(ctx, &b), n).unwrap();
                let (mut wdg, mut wdu) = (vec![0.0; n], vec![0.0; n]);
                back(&mut wdg, &mut wdu, &to_f64(&g), &to_f64(&g4), &to_f64(&b));
                assert_close(&format!("{act:?} dgate"), &read(ctx, &dg), &wdg, ELEM.0, ELEM.1);
                assert_close(&format!("{act:?} dup"), &read(ctx, &du), &wdu, ELEM.0, ELEM.1);
            }
        }
    });
}

/// `bench ops`' "peak fma" kernel computes what it claims, so that its rate counts real
/// FLOPs: every chain from its own start (|m| near 1 over a few rounds, so that a chain's start
/// still shows in the sum: 0.9¹⁷ ≈ 0.17), workgroups past the last one's invocations idle.
#[test]
fn fma_peak_matches_cpu() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(29);
        for (n, iters) in [(1, 0), (255, 1), (1000, 3), (70_001, 17)] {
            let sign = if rng.uniform(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 };
            let (m, c) = (sign * rng.uniform(0.9, 1.0), rng.uniform(-0.1, 0.1));
            let out = poisoned(ctx, n);
            fma_peak::fma_peak(ctx, &out, n, iters, m, c).unwrap();
            let mut want = vec![0.0; n];
            cpu::fma_peak(&mut want, iters, m as f64, c as f64);
            // each chain within 3.7 of 0, its f32 rounding ≤ 2.4e-7 a round; 32 chains summed
            assert_close(&format!("fma_peak n {n}, {iters} rounds"), &read(ctx, &out), &want, 2e-4, 1e-5);
        }
    });
}

/// A long recording is submitted in parts as it grows, so that the GPU starts on it while the
/// host records the rest; the parts run in order and none is lost: 300 in-place updates
/// that do not commute.
#[test]
fn long_recordings_are_submitted_in_parts_and_run_in_order() {
    let Some(ctx) = own_gpu() else { return };
    let n = 1000;
    let (acc, one) = (upload(&ctx, &vec![0.0; n]), upload(&ctx, &vec![1.0; n]));
    let mut want = 0.0f64;
    ctx.profile_begin();
    for i in 0..300 {
        let beta = if i % 3 == 0 { 0.5 } else { 1.0 };
        residual::residual_accumulate(&ctx, &acc, &one, beta, n).unwrap();
        want = f64::from(beta) * want + 1.0;
    }
    let profile = pollster::block_on(ctx.profile_end()).unwrap();
    assert_eq!(profile.dispatches, 300);
    // two parts while recording (every 128 launches), the rest at the readback
    assert_eq!(profile.submissions, 3, "{profile:?}");
    assert_close("300 updates", &read(&ctx, &acc), &vec![want; n], ELEM.0, ELEM.1);
}

/// Kernel times (`hearth bench --kernel-times`) on an adapter with timestamps inside compute
/// passes (lavapipe has them): each launch timed in place, its recording submitted in parts as
/// untimed (not a launch at a time), in sets of 2,048 launches: 2,100 updates and 3 sums, the
/// same results as untimed, each kernel's time above 0 and all of them within the window's
/// GPU time.
#[test]
fn kernel_times_time_each_launch_in_its_pass() {
    let Some(ctx) = own_gpu() else { return };
    let n = 1000;
    let (acc, one, sum) = (upload(&ctx, &vec![0.0; n]), upload(&ctx, &vec![1.0; n]), poisoned(&ctx, n));
    let mut want = 0.0f64;
    ctx.profile_begin_with(true);
    for i in 0..2100 {
        let beta = if i % 3 == 0 { 0.5 } else { 1.0 };
        residual::residual_accumulate(&ctx, &acc, &one, beta, n).unwrap();
        want = f64::from(beta) * want + 1.0;
        if i % 1000 == 0 {
            residual::residual_forward(&ctx, &sum, &acc, &one, n).unwrap();
        }
    }
    let p = pollster::block_on(ctx.profile_end()).unwrap();
    assert_close("2,100 timed updates", &read(&ctx, &acc), &vec![want; n], ELEM.0, ELEM.1);
    assert_eq!(p.kernels.values().map(|k| k.launches).sum::<u64>(), 2103);
    if p.kernel_times != Some(hearth_core::gpu::KernelTiming::InPass) {
        assert_eq!(p.kernel_times, Some(hearth_core::gpu::KernelTiming::Alone));
        eprintln!("SKIPPED: this adapter has no timestamps inside passes");
        return;
    }
    assert_eq!(p.submissions, 2103u64.div_ceil(128), "{p:?}");
    assert!(p.kernels.values().all(|k| k.ms > 0.0), "{:?}", p.kernels);
    let timed: f64 = p.kernels.values().map(|k| k.ms).sum();
    if let Some(gpu_ms) = p.gpu_ms {
        assert!(timed <= gpu_ms * 1.01, "the launches' {timed} ms past the window's GPU time of {gpu_ms} ms");
    }
}

/// Scratch buffers whose size follows the batch come in size classes of a quarter octave:
/// a thousand lengths within one octave take at most five buffers and five bind groups
/// (each length used to keep a buffer of its own in the pool, and bind its own group).
#[test]
fn scratch_buffers_of_many_lengths_share_a_few_classes() {
    let Some(ctx) = own_gpu() else { return };
    let ones = upload(&ctx, &vec![1.0; 2048]);
    ctx.profile_begin();
    for n in 1024..2048 {
        let s = ctx.alloc_scratch_f32(n).unwrap();
        assert!((4 * n as u64..=5 * n as u64).contains(&s.len_bytes()), "{n} f32 in a scratch of {} bytes", s.len_bytes());
        residual::residual_accumulate(&ctx, &s, &ones, 0.0, n).unwrap();
    }
    let p = pollster::block_on(ctx.profile_end()).unwrap();
    assert_eq!(p.dispatches, 1024);
    assert!(p.buffers_created <= 5 && p.bind_groups_created <= 5, "{} buffers and {} bind groups for 1024 lengths", p.buffers_created, p.bind_groups_created);
}

#[test]
fn cpu_gated_backwards_match_finite_differences() {
    let mut rng = Rng::new(3);
    let n = 7;
    let (g, up, w) = (to_f64(&rng.vec_uniform(n, -4.0, 4.0)), to_f64(&u(&mut rng, n)), to_f64(&u(&mut rng, n)));
    type Cpu = fn(&mut [f64], &[f64], &[f64]);
    type CpuBack = fn(&mut [f64], &mut [f64], &[f64], &[f64], &[f64]);
    let acts: [(&str, Cpu, CpuBack); 2] = [("swiglu", cpu::swiglu_forward, cpu::swiglu_backward), ("geglu", cpu::geglu_forward, cpu::geglu_backward)];
    for (name, fwd, back) in acts {
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        back(&mut dg, &mut du, &w, &g, &up);
        let all: Vec<usize> = (0..n).collect();
        let loss = |g: &[f64], up: &[f64]| {
            let mut o = vec![0.0; n];
            fwd(&mut o, g, up);
            dot(&o, &w)
        };
        assert_grad(&format!("{name} dgate"), &dg, &finite_diff(&mut |x| loss(x, &up), &g, &all, 1e-6));
        assert_grad(&format!("{name} dup"), &du, &finite_diff(&mut |x| loss(&g, x), &up, &all, 1e-6));
    }
}

#[test]
fn rmsnorm_matches_cpu() {
    with_each_reduction!(ctx => {
        let mut rng = Rng::new(4);
        for _ in 0..3 {
            let (n, c, eps) = (1 + rng.below(40), 1 + rng.below(600), 1e-5);
            let (x, w, g) = (u(&mut rng, n * c), u(&mut rng, c), u(&mut rng, n * c));
            let (out, rstd) = (poisoned(ctx, n * c), poisoned(ctx, n));
            let (xb, wb, gb) = (upload(ctx, &x), upload(ctx, &w), upload(ctx, &g));
            rmsnorm::rmsnorm_forward(ctx, &out, &rstd, &xb, &wb, n, c, eps as f32).unwrap();
            let (mut want, mut wr) = (vec![0.0; n * c], vec![0.0; n]);
            cpu::rmsnorm_forward(&mut want, &mut wr, &to_f64(&x), &to_f64(&w), n, c, eps);
            assert_close("rmsnorm out", &read(ctx, &out), &want, ROW.0, ROW.1);
            assert_close("rmsnorm rstd", &read(ctx, &rstd), &wr, ROW.0, ROW.1);

            let (dinp, dw) = (poisoned(ctx, n * c), poisoned(ctx, c));
            rmsnorm::rmsnorm_backward(ctx, &dinp, &gb, &xb, &wb, &rstd, n, c).unwrap();
            rmsnorm::rmsnorm_backward_weight(ctx, &dw, &gb, &xb, &rstd, n, c).unwrap();
            let (mut wdx, mut wdw) = (vec![0.0; n * c], vec![0.0; c]);
            cpu::rmsnorm_backward(&mut wdx, &mut wdw, &to_f64(&g), &to_f64(&x), &to_f64(&w), n, c, eps);
            assert_close("rmsnorm dinp", &read(ctx, &dinp), &wdx, ROW.0, ROW.1);
            assert_close("rmsnorm dweight", &read(ctx, &dw), &wdw, ROW.0, ROW.1);

            // added to a residual stream's gradient
            let d0 = u(&mut rng, n * c);
            let dres = upload(ctx, &d0);
            rmsnorm::rmsnorm_backward_add(ctx, &dres, &gb, &xb, &wb, &rstd, n, c).unwrap();
            let wadd: Vec<f64> = wdx.iter().zip(&d0).map(|(w, d)| w + f64::from(*d)).collect();
            assert_close("rmsnorm dinp added", &read(ctx, &dres), &wadd, ROW.0, ROW.1);

            // a residual add and the norm in one launch: the same values as the two launches,
            // into a new buffer and in place
            let proj = u(&mut rng, n * c);
            let pb = upload(ctx, &proj);
            let (sum, out2, rstd2) = (poisoned(ctx, n * c), poisoned(ctx, n * c), poisoned(ctx, n));
            rmsnorm::add_rmsnorm_forward(ctx, Some(&sum), &out2, &rstd2, &xb, &pb, &wb, n, c, eps as f32).unwrap();
            let (apart, sum1) = (poisoned(ctx, n * c), poisoned(ctx, n * c));
            residual::residual_forward(ctx, &sum1, &xb, &pb, n * c).unwrap();
            rmsnorm::rmsnorm_forward(ctx, &apart, &rstd, &sum1, &wb, n, c, eps as f32).unwrap();
            let (want_out, want_rstd) = (read(ctx, &apart), read(ctx, &rstd));
            assert_eq!(read(ctx, &sum), read(ctx, &sum1), "add_rmsnorm sum");
            assert_eq!(read(ctx, &out2), want_out, "add_rmsnorm out");
            assert_eq!(read(ctx, &rstd2), want_rstd, "add_rmsnorm rstd");
            let x_io = upload(ctx, &x);
            rmsnorm::add_rmsnorm_forward(ctx, None, &out2, &rstd2, &x_io, &pb, &wb, n, c, eps as f32).unwrap();
            assert_eq!(read(ctx, &x_io), read(ctx, &sum1), "add_rmsnorm in place: sum");
            assert_eq!(read(ctx, &out2), want_out, "add_rmsnorm in place: out");
            assert_eq!(read(ctx, &rstd2), want_rstd, "add_rmsnorm in place: rstd");
        }
    });
}

#[test]
fn cpu_rmsnorm_backward_matches_finite_differences() {
    let mut rng = Rng::new(5);
    let (n, c, eps) = (3, 6, 1e-5);
    let (x, w, g) = (to_f64(&u(&mut rng, n * c)), to_f64(&u(&mut rng, c)), to_f64(&u(&mut rng, n * c)));
    let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
    cpu::rmsnorm_backward(&mut dx, &mut dw, &g, &x, &w, n, c, eps);
    let loss = |x: &[f64], w: &[f64]| {
        let (mut o, mut r) = (vec![0.0; n * c], vec![0.0; n]);
        cpu::rmsnorm_forward(&mut o, &mut r, x, w, n, c, eps);
        dot(&o, &g)
    };
    assert_grad("dinp", &dx, &finite_diff(&mut |v| loss(v, &w), &x, &(0..n * c).collect::<Vec<_>>(), 1e-6));
    assert_grad("dweight", &dw, &finite_diff(&mut |v| loss(&x, v), &w, &(0..c).collect::<Vec<_>>(), 1e-6));
}

/// Queries and keys rotated in one launch (a different number of heads each), into buffers of
/// their own and in place, against the CPU reference of each.
#[test]
fn rope_matches_cpu() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(6);
        for _ in 0..3 {
            let (n, h, hs, theta) = (1 + rng.below(40), 1 + rng.below(5), 2 * (1 + rng.below(40)), 10000.0);
            let hk = 1 + rng.below(h);
            // positions of long contexts too (angles up to 1.3·10⁵ radians)
            let pos: Vec<u32> = (0..n).map(|i| rng.below(if i % 2 == 0 { 2048 } else { 131072 }) as u32).collect();
            let (q, k) = (u(&mut rng, n * h * hs), u(&mut rng, n * hk * hs));
            // plain; Llama 3 scaling (original context 64, so all three bands occur); partial
            // rotary with LongRoPE's divisors and attention factor
            let mut d = rope::RopeDims { n, heads: h, kv_heads: hk, head_size: hs, rotary: hs, theta: theta as f32, scaling: Default::default(), longrope: None };
            match rng.below(3) {
                0 => {}
                1 => d.scaling = rope::RopeScaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 64.0 },
                _ => {
                    d.rotary = 2 * (hs / 2 * 3 / 4).max(1);
                    let mut divisors = [1.0; rope::MAX_FREQS];
                    divisors.iter_mut().for_each(|x| *x = rng.vec_uniform(1, 1.0, 3.0)[0]);
                    d.longrope = Some(rope::LongRope { divisors, mscale: 1.19 });
                }
            }
            let (qb, kb, pb) = (upload(ctx, &q), upload(ctx, &k), ctx.upload_u32(&pos).unwrap());
            // The same f32 frequencies and angles as the reference (HF's); what remains is the
            // kernel's cos and sin, good to about 1e-7 at any of these angles.
            for (sign, name) in [(1.0, "rope_forward"), (-1.0, "rope_backward")] {
                let (mut want_q, mut want_k) = (vec![0.0; q.len()], vec![0.0; k.len()]);
                cpu::rope(&mut want_q, &to_f64(&q), &pos, &d, sign);
                cpu::rope(&mut want_k, &to_f64(&k), &pos, &rope::RopeDims { heads: hk, ..d }, sign);
                if sign > 0.0 {
                    let (q_out, k_out) = (poisoned(ctx, q.len()), poisoned(ctx, k.len()));
                    rope::rope_forward(ctx, (&q_out, &k_out), &qb, &kb, &pb, d).unwrap();
                    assert_close(&format!("{name} q {d:?}"), &read(ctx, &q_out), &want_q, 1e-6, 1e-5);
                    assert_close(&format!("{name} k {d:?}"), &read(ctx, &k_out), &want_k, 1e-6, 1e-5);
                }
                // in place, q and k two parts of one buffer (as training projects them, and
                // as attention's backward writes their gradients)
                let arena = ctx.alloc_arena(&[q.len(), k.len()]).unwrap();
                ctx.write_f32(&arena.views[0], &q);
                ctx.write_f32(&arena.views[1], &k);
                let (q_in, k_in) = (&arena.views[0], &arena.views[1]);
                if sign > 0.0 { rope::rope_forward_in_place(ctx, q_in, k_in, &pb, d) } else { rope::rope_backward_in_place(ctx, q_in, k_in, &pb, d) }.unwrap();
                assert_close(&format!("{name} in place, q {d:?}"), &read(ctx, q_in), &want_q, 1e-6, 1e-5);
                assert_close(&format!("{name} in place, k {d:?}"), &read(ctx, k_in), &want_k, 1e-6, 1e-5);
            }
        }
    });
}

#[test]
fn cpu_rope_backward_matches_finite_differences() {
    let mut rng = Rng::new(7);
    let (n, h, hs) = (3, 2, 6);
    let pos = [0u32, 5, 17];
    // partial rotary (4 of 6 dims) with LongRoPE's divisors and factor
    let mut divisors = [1.0; rope::MAX_FREQS];
    divisors[1] = 2.5;
    let d = rope::RopeDims { n, heads: h, kv_heads: h, head_size: hs, rotary: 4, theta: 10000.0, scaling: Default::default(), longrope: Some(rope::LongRope { divisors, mscale: 1.2 }) };
    let (x, g) = (to_f64(&u(&mut rng, n * h * hs)), to_f64(&u(&mut rng, n * h * hs)));
    let mut dx = vec![0.0; x.len()];
    cpu::rope(&mut dx, &g, &pos, &d, -1.0);
    let mut loss = |x: &[f64]| {
        let mut o = vec![0.0; x.len()];
        cpu::rope(&mut o, x, &pos, &d, 1.0);
        dot(&o, &g)
    };
    assert_grad("rope dinp", &dx, &finite_diff(&mut loss, &x, &(0..x.len()).collect::<Vec<_>>(), 1e-6));
}

fn random_segments(rng: &mut Rng, b: usize, t: usize, mean_len: usize) -> Vec<u32> {
    let mut seg = Vec::with_capacity(b * t);
    for _ in 0..b {
        let mut s = 0;
        for i in 0..t {
            if i > 0 && rng.below(mean_len) == 0 {
                s += 1;
            }
            seg.push(s);
        }
    }
    seg
}

#[test]
fn attention_matches_cpu() {
    let mut rng = Rng::new(8);
    // (…, window, mean sequence length): sliding windows inside and across the tiled
    // kernels' 64-row blocks; heads of every size the flash kernels take per invocation (4 to
    // 16, 24, 64, 100 and 128: 1, 2, 4 and 8 dims); head size 256 (Gemma 3) with its own
    // scale; long sequences,
    // (1100 tokens, 8 KV heads) more scores than one chunk of the matmul kernels holds, and
    // a long sequence beside short ones (chunks padded to different lengths); SmolLM2's heads
    // (9 over 3 KV heads of 64) over 300 tokens, past what lavapipe's loop limit lets the
    // per-row and tiled kernels run (they refuse there, and the matmuls take over; GPUs and
    // SwiftShader run them)
    let shapes = [
        (1, 300, 9, 3, 64, 0, usize::MAX),
        (1, 1, 1, 1, 4, 0, 6), (2, 37, 6, 2, 16, 0, 6), (1, 70, 9, 3, 64, 0, 6), (2, 9, 4, 4, 128, 0, 6), (1, 150, 4, 1, 8, 0, 6),
        (2, 131, 2, 2, 100, 0, 6), (1, 70, 4, 2, 24, 0, 6), (2, 37, 4, 2, 16, 5, 6), (1, 150, 2, 1, 8, 70, 6), (1, 20, 2, 1, 256, 7, 6),
        (2, 150, 6, 2, 16, 0, 60), (1, 150, 2, 1, 8, 70, usize::MAX), (1, 1100, 8, 8, 4, 0, usize::MAX), (1, 1100, 8, 8, 4, 0, 0),
    ];
    // the flash kernels again with the keys' blocks split (block_part: 3 blocks or more,
    // causal), as where the tuning measured many more workgroups at once than a launch has
    let keys_split = own_gpu().map(|c| c.with_tile_choice(hearth_core::gpu::TileChoice { split_workgroups: Some(4096), ..Default::default() }));
    // and with dk and dv in launches of their own (HEARTH_FLASH_KV=apart), split likewise
    let kv_apart = own_gpu().map(|c| c.with_tile_choice(hearth_core::gpu::TileChoice { split_workgroups: Some(4096), ..Default::default() }).with_flash_kv_apart(true));
    for (b, t, nh, nkv, hs, window, mean_len) in shapes {
        let scale = if hs == 256 { 1.0 / 24f32.sqrt() } else { 1.0 / (hs as f32).sqrt() };
        let s = AttnSizes { scale: scale as f64, window, ..AttnSizes::causal(b, t, nh, nkv, hs) };
        let d = AttentionDims { scale, window, ..AttentionDims::causal(b, t, nh, nkv, hs) };
        let (q, k, v, g) = (u(&mut rng, b * t * nh * hs), u(&mut rng, b * t * nkv * hs), u(&mut rng, b * t * nkv * hs), u(&mut rng, b * t * nh * hs));
        // mean length 0: one sequence of 1000 tokens, then sequences of 5 (chunks padded to
        // 1000 and to 8 rows)
        let seg: Vec<u32> = if mean_len == 0 { (0..t).map(|i| i.saturating_sub(995) as u32 / 5).collect() } else { random_segments(&mut rng, b, t, mean_len) };
        let mut want = vec![0.0; q.len()];
        cpu::attention_forward(&mut want, &to_f64(&q), &to_f64(&k), &to_f64(&v), &seg, s);
        let (mut wq, mut wk, mut wv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        cpu::attention_backward(&mut wq, &mut wk, &mut wv, &to_f64(&g), &to_f64(&q), &to_f64(&k), &to_f64(&v), &seg, s);
        // where q and k went through rope first (up to 150 tokens): dq and dk rotated back, all
        // dims or some, with LongRoPE's factor where the head is small (heads of 256 take more
        // frequencies than the kernels' params hold: rope's own launch follows them)
        let rope_case = (t <= 150).then(|| {
            let rotary = if hs % 4 == 0 && rng.below(2) == 0 { hs / 2 } else { hs - hs % 2 };
            let mut dims = rope::RopeDims { n: b * t, heads: nh, kv_heads: nkv, head_size: hs, rotary, theta: 10000.0, scaling: Default::default(), longrope: None };
            if rotary <= 16 {
                dims.longrope = Some(rope::LongRope { divisors: [1.5; rope::MAX_FREQS], mscale: 1.19 });
            }
            let pos: Vec<u32> = (0..b * t).map(|_| rng.below(2048) as u32).collect();
            let (mut rq, mut rk) = (vec![0.0; wq.len()], vec![0.0; wk.len()]);
            cpu::rope(&mut rq, &wq, &pos, &dims, -1.0);
            cpu::rope(&mut rk, &wk, &pos, &rope::RopeDims { heads: nkv, ..dims }, -1.0);
            (dims, pos, rq, rk)
        });
        // every kernel on this adapter's own matmuls, and the matmul one on the GPU
        // kernels' tiled matmuls too (where HEARTH_ATTENTION=matmul puts it on a GPU)
        let runs_on = |ctx: &hearth_core::GpuContext, all: &[AttentionKernels], paths: &str| {
            let (qb, kb, vb, gb, sb) = (upload(ctx, &q), upload(ctx, &k), upload(ctx, &v), upload(ctx, &g), ctx.upload_u32(&seg).unwrap());
            let (runs, lens) = segment_runs(&seg, t).unwrap();
            let runs = ctx.upload_u32(&runs).unwrap();
            let sb = Segments { ids: &sb, runs: &runs, lens: &lens, with_pos: None };
            for &kernels in all {
                let what = format!("{kernels:?} ({paths}) {s:?}");
                let (out, stats) = (poisoned(ctx, q.len()), poisoned(ctx, d.stats_len()));
                match attention_forward_with(ctx, kernels, &out, &stats, &qb, &kb, &vb, sb, d) {
                    Err(e) if ctx.is_llvmpipe() && e.to_string().contains("lavapipe's limit") => {
                        assert_eq!(kernels.for_dims(ctx, &d, &lens), AttentionKernels::Matmul, "{what}");
                        eprintln!("SKIPPED on lavapipe: {e}");
                        continue;
                    }
                    r => r.unwrap(),
                }
                assert_close(&format!("attention out {what}"), &read(ctx, &out), &want, ATTN.0, ATTN.1);
                let (dq, dk, dv) = (poisoned(ctx, q.len()), poisoned(ctx, k.len()), poisoned(ctx, v.len()));
                attention_backward_with(ctx, kernels, &dq, &dk, &dv, &gb, &qb, &kb, &vb, &out, &stats, sb, d, None).unwrap();
                assert_close(&format!("attention dq {what}"), &read(ctx, &dq), &wq, ATTN.0, ATTN.1);
                assert_close(&format!("attention dk {what}"), &read(ctx, &dk), &wk, ATTN.0, ATTN.1);
                assert_close(&format!("attention dv {what}"), &read(ctx, &dv), &wv, ATTN.0, ATTN.1);
                let Some((dims, pos, rq, rk)) = &rope_case else { continue };
                // the positions beside the ids in one buffer (as training holds them), and apart
                let table = ctx.alloc_arena(&[b * t, b * t]).unwrap();
                ctx.write_bytes(&table.views[0], &seg.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>());
                ctx.write_bytes(&table.views[1], &pos.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>());
                let both = hearth_core::GpuBuffer::spanning(&table.whole, &table.views[0], &table.views[1]);
                let pos_at = ((table.views[1].offset() - table.views[0].offset()) / 4) as usize;
                for with_pos in [Some((&both, pos_at)), None] {
                    let (dq, dk, dv) = (poisoned(ctx, q.len()), poisoned(ctx, k.len()), poisoned(ctx, v.len()));
                    let sb = Segments { ids: &table.views[0], with_pos, ..sb };
                    let rope_grad = hearth_core::ops::attention::RopeGrad { pos: &table.views[1], dims: *dims };
                    attention_backward_with(ctx, kernels, &dq, &dk, &dv, &gb, &qb, &kb, &vb, &out, &stats, sb, d, Some(rope_grad)).unwrap();
                    let what = format!("{what} through rope ({} rotary dims; positions beside the ids: {})", dims.rotary, with_pos.is_some());
                    assert_close(&format!("attention dq {what}"), &read(ctx, &dq), rq, ATTN.0, ATTN.1);
                    assert_close(&format!("attention dk {what}"), &read(ctx, &dk), rk, ATTN.0, ATTN.1);
                    assert_close(&format!("attention dv {what}"), &read(ctx, &dv), &wv, ATTN.0, ATTN.1);
                }
            }
        };
        with_gpu!(ctx => { runs_on(ctx, &AttentionKernels::ALL, "adapter's matmuls") });
        if let Some(ctx) = &keys_split {
            ctx.profile_begin();
            runs_on(ctx, &[AttentionKernels::Flash], "keys' blocks split");
            let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
            let launches = |entry: &str| kernels.iter().filter(|(k, _)| k.contains(entry)).map(|(_, s)| s.launches).sum::<u64>();
            // dq is summed only from a split's parts, and so are dk and dv where each KV head has
            // one query head
            let split = window == 0 && t.div_ceil(64) >= 3;
            if launches(":attention_flash_backward_query") > 0 {
                assert_eq!(launches(":attention_flash_sum_queries") > 0, split, "{s:?}: the query parts' sums ({kernels:?})");
            }
            if nh == nkv && launches(":attention_flash_backward_kv") > 0 {
                assert_eq!(launches(":attention_flash_sum_heads") > 0, split, "{s:?}: the key parts' sums ({kernels:?})");
            }
        }
        if let Some(ctx) = &kv_apart {
            ctx.profile_begin();
            runs_on(ctx, &[AttentionKernels::Flash], "dk and dv apart");
            let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
            let launched = |name: &str| kernels.iter().any(|(k, s)| k.contains(":attention_flash_backward_kv") && k.contains(name) && s.launches > 0);
            // (where the flash kernels ran: on lavapipe the matmuls take the longest)
            if launched("") {
                assert!(launched("dv alone") && launched("dk alone") && !launched("dims]"), "{s:?}: dv's and dk's launches alone ({kernels:?})");
            }
        }
        if t <= 150 {
            with_gpu_kernels!(ctx => { runs_on(ctx, &[AttentionKernels::Matmul], "tiled matmuls") });
        }
    }
}

#[test]
fn segment_runs_are_the_sequences_of_each_row() {
    // two rows of 5: (b, start, len) per run, longest first (ties in order)
    let (runs, lens) = segment_runs(&[0, 0, 1, 1, 1, 0, 1, 1, 2, 2], 5).unwrap();
    assert_eq!(runs, vec![0, 2, 3, 0, 0, 2, 1, 1, 2, 1, 3, 2, 1, 0, 1]);
    assert_eq!(lens, vec![3, 2, 2, 2, 1]);
    let err = segment_runs(&[0, 0, 1, 0], 4).unwrap_err().to_string();
    assert!(err.contains("id 0 comes back after another in row 0"), "{err}");
    // software adapters attend as matmuls unless one sequence's scores would not fit a chunk
    // or the head size is not a multiple of 4; GPUs asked for them also need a KV head's
    // query rows (3 × 1400 here) within a batched tiled reduction (a real GPU's shared context
    // runs the GPU kernels: the second block alone)
    let d = AttentionDims::causal(1, 4096, 9, 3, 64);
    let odd_heads = AttentionDims::causal(1, 64, 4, 2, 6);
    let (fits, long, too_long): (&[u32], &[u32], &[u32]) = (&[512; 8], &[1400, 1400, 30], &[4096]);
    with_gpu!(ctx => {
        if ctx.kernel_paths() != hearth_core::gpu::KernelPaths::Gpu {
            assert_eq!(AttentionKernels::Matmul.for_dims(ctx, &d, fits), AttentionKernels::Matmul);
            assert_eq!(AttentionKernels::Matmul.for_dims(ctx, &d, long), AttentionKernels::Matmul);
            assert_eq!(AttentionKernels::Matmul.for_dims(ctx, &d, too_long), AttentionKernels::Rows);
            assert_eq!(AttentionKernels::Tiled.for_dims(ctx, &d, too_long), AttentionKernels::Tiled);
            assert_eq!(AttentionKernels::Matmul.for_dims(ctx, &odd_heads, &[64]), AttentionKernels::Rows);
        }
    });
    with_gpu_kernels!(ctx => {
        assert_eq!(AttentionKernels::Matmul.for_dims(ctx, &d, fits), AttentionKernels::Matmul);
        assert_eq!(AttentionKernels::Matmul.for_dims(ctx, &d, long), AttentionKernels::Tiled);
        // the GPU kernels train with the flash kernels, which give heads above 128 to the
        // matmuls (or, where those cannot take the sizes either, to the tiled kernels)
        assert_eq!(AttentionKernels::for_training(ctx), AttentionKernels::Flash);
        let wide = AttentionDims::causal(1, 4096, 8, 4, 256);
        assert_eq!(AttentionKernels::Flash.for_dims(ctx, &wide, &[512; 8]), AttentionKernels::Matmul);
        assert_eq!(AttentionKernels::Flash.for_dims(ctx, &wide, &[4096]), AttentionKernels::Tiled);
        assert_eq!(AttentionKernels::Flash.for_dims(ctx, &d, too_long), AttentionKernels::Flash);
    });
    assert_eq!(AttentionKernels::parse("Matmul").unwrap(), AttentionKernels::Matmul);
    assert_eq!(AttentionKernels::parse("flash").unwrap(), AttentionKernels::Flash);
    assert!(AttentionKernels::parse("fast").unwrap_err().to_string().contains("expected rows, tiled, matmul or flash"));
}

#[test]
fn cached_attention_matches_cpu() {
    // The last T of S tokens over a KV cache that holds all S: rows S−T.. of the CPU attention
    // over the whole sequence. Each token also runs the decode kernel. Over 1,200 tokens
    // of heads of 64, lavapipe's loop limit refuses attention_forward_cached: the model runs
    // such a chunk a token at a time through the decode kernel (`cached_row_by_row`), as
    // here.
    with_gpu!(ctx => {
        let mut rng = Rng::new(10);
        let shapes = [
            (1, 1, 1, 1, 4, 0), (9, 1, 6, 2, 16, 0), (130, 1, 9, 3, 64, 0), (40, 3, 4, 4, 128, 0), (17, 1, 4, 2, 6, 0), (40, 3, 4, 2, 256, 9),
            (30, 1, 4, 2, 16, 8), (1200, 4, 9, 3, 64, 0),
            // more queries than a workgroup's 64 (over a cache, and from an empty one), with a
            // window that leaves out the first keys of the later queries
            (250, 150, 6, 2, 16, 0), (150, 150, 3, 1, 32, 0), (300, 140, 4, 2, 8, 50),
        ];
        for (s_len, t, nh, nkv, hs, window) in shapes {
            let past = s_len - t;
            let sizes = AttnSizes { window, ..AttnSizes::causal(1, s_len, nh, nkv, hs) };
            let (q, k, v) = (u(&mut rng, s_len * nh * hs), u(&mut rng, s_len * nkv * hs), u(&mut rng, s_len * nkv * hs));
            let mut full = vec![0.0; q.len()];
            cpu::attention_forward(&mut full, &to_f64(&q), &to_f64(&k), &to_f64(&v), &vec![0; s_len], sizes);
            let d = AttentionDims { window, ..AttentionDims::causal(1, t, nh, nkv, hs) };
            let (kb, vb) = (upload(ctx, &k), upload(ctx, &v));
            let what = format!("S {s_len} T {t} {nh}/{nkv}×{hs}");
            // one invocation per query and head, workgroups of 64 queries, and the GPUs'
            // flash kernels' 64 × 64 tiles of scores (heads above 128: the tiled kernels)
            for kernels in [AttentionKernels::Rows, AttentionKernels::Tiled, AttentionKernels::Flash] {
                let out = poisoned(ctx, t * nh * hs);
                let cached = attention_forward_cached_with(ctx, kernels, &out, &upload(ctx, &q[past * nh * hs..]), &kb, &vb, past, d);
                if cached_row_by_row(ctx, &d, past) {
                    assert!(cached.unwrap_err().to_string().contains("lavapipe's limit"), "{what}");
                } else {
                    cached.unwrap();
                    assert_close(&format!("cached attention {what}, {kernels:?} kernels"), &read(ctx, &out), &full[past * nh * hs..], ATTN.0, ATTN.1);
                }
            }
            let out = poisoned(ctx, t * nh * hs);
            if hs % 4 != 0 {
                let token = DecodeToken { q: &upload(ctx, &q[..nh * hs]), out: &out, new: None, row: 0, past: 0, rope: None };
                let res = attention_decode(ctx, token, (&kb, &vb), &poisoned(ctx, nh * s_len), AttentionDims { t: 1, ..d });
                assert!(res.unwrap_err().to_string().contains("multiple of 4"));
                continue;
            }
            // each of the T tokens alone over the cache before it: its query alone and its key
            // and value in the cache; and as row r of the sequence's queries, outputs, keys and
            // values, the launches storing the key and value into caches whose rows from
            // `past` on are NaN until then
            let (one, row) = (AttentionDims { t: 1, ..d }, nkv * hs);
            let poison_from_past = |x: &[f32]| -> Vec<f32> { x.iter().enumerate().map(|(i, &x)| if i < past * row { x } else { f32::NAN }).collect() };
            let (k_grown, v_grown) = (upload(ctx, &poison_from_past(&k)), upload(ctx, &poison_from_past(&v)));
            let (q_all, out_all) = (upload(ctx, &q), poisoned(ctx, s_len * nh * hs));
            for r in past..s_len {
                let (out, scores) = (poisoned(ctx, nh * hs), poisoned(ctx, decode_scratch_len(nh, hs, s_len)));
                let want = &full[r * nh * hs..(r + 1) * nh * hs];
                let alone = DecodeToken { q: &upload(ctx, &q[r * nh * hs..(r + 1) * nh * hs]), out: &out, new: None, row: 0, past: r, rope: None };
                attention_decode(ctx, alone, (&kb, &vb), &scores, one).unwrap();
                assert_close(&format!("decode attention {what}, token {r} over the cache"), &read(ctx, &out), want, ATTN.0, ATTN.1);
                let in_rows = DecodeToken { q: &q_all, out: &out_all, new: Some((&kb, &vb)), row: r, past: r, rope: None };
                attention_decode(ctx, in_rows, (&k_grown, &v_grown), &scores, one).unwrap();
                assert_close(&format!("decode attention {what}, token {r} as row {r}, its key and value appended"), &read(ctx, &out_all)[r * nh * hs..(r + 1) * nh * hs], want, ATTN.0, ATTN.1);
            }
            assert!(read(ctx, &k_grown) == k && read(ctx, &v_grown) == v, "{what}: the keys and values stored into the caches");
            // the token's query and key unrotated, rotated by the launches to its position (all
            // dims, or half; a cache of rotated keys): the attention of the rotated sequence;
            // rotations past the params' frequencies are refused
            for rotary in [hs, hs / 2].into_iter().filter(|r| r % 2 == 0) {
                let dims = |heads: usize, n: usize| rope::RopeDims { n, heads, kv_heads: nkv, head_size: hs, rotary, theta: 10000.0, scaling: Default::default(), longrope: None };
                let pos: Vec<u32> = (0..s_len as u32).collect();
                let (mut q_rot, mut k_rot) = (vec![0.0; q.len()], vec![0.0; k.len()]);
                cpu::rope(&mut q_rot, &to_f64(&q), &pos, &dims(nh, s_len), 1.0);
                cpu::rope(&mut k_rot, &to_f64(&k), &pos, &dims(nkv, s_len), 1.0);
                let mut full_rot = vec![0.0; q.len()];
                cpu::attention_forward(&mut full_rot, &q_rot, &k_rot, &to_f64(&v), &vec![0; s_len], sizes);
                let k_rot32: Vec<f32> = k_rot.iter().map(|&x| x as f32).collect();
                let (k_cache, v_cache) = (upload(ctx, &poison_from_past(&k_rot32)), upload(ctx, &poison_from_past(&v)));
                for r in past..s_len {
                    let (out, scores) = (poisoned(ctx, s_len * nh * hs), poisoned(ctx, decode_scratch_len(nh, hs, s_len)));
                    let token = DecodeToken { q: &q_all, out: &out, new: Some((&kb, &vb)), row: r, past: r, rope: Some(dims(nh, 1)) };
                    let res = attention_decode(ctx, token, (&k_cache, &v_cache), &scores, one);
                    if !rope_fits(&dims(nh, 1)) {
                        assert!(res.unwrap_err().to_string().contains("rotary dims"), "{what}");
                        continue;
                    }
                    res.unwrap();
                    assert_close(&format!("decode attention {what}, token {r} rotated ({rotary} dims)"), &read(ctx, &out)[r * nh * hs..(r + 1) * nh * hs], &full_rot[r * nh * hs..(r + 1) * nh * hs], ATTN.0, ATTN.1);
                }
                if rope_fits(&dims(nh, 1)) {
                    assert_close(&format!("{what}: the rotated keys stored into the cache ({rotary} dims)"), &read(ctx, &k_cache), &k_rot, 1e-5, 1e-5);
                }
            }
        }
    });
}

#[test]
fn decode_attention_takes_contexts_past_a_walk_of_the_cache() {
    // A token over 40,000 cached tokens (all of them, or a window of the last 1,000): more
    // than one invocation walking the cache twice could on lavapipe (its loop limit, 65,535
    // iterations), so each takes a share of the keys; with the workgroups of lavapipe's paths
    // and of the GPU kernels. The CPU's attention of the last token alone.
    let mut rng = Rng::new(12);
    let (past, nh, nkv, hs) = (40_000, 4, 2, 64);
    let n = past + 1;
    let (q, k, v) = (u(&mut rng, nh * hs), u(&mut rng, n * nkv * hs), u(&mut rng, n * nkv * hs));
    let (q64, k64, v64, seg) = (to_f64(&q), to_f64(&k), to_f64(&v), vec![0; n]);
    let want = |window: usize| {
        let mut want = vec![0.0; nh * hs];
        cpu::attention_forward_token(&mut want, &q64, &k64, &v64, &seg, AttnSizes { window, ..AttnSizes::causal(1, n, nh, nkv, hs) }, 0, past);
        want
    };
    let row = nkv * hs;
    let poisoned_last = |x: &[f32]| -> Vec<f32> { x.iter().enumerate().map(|(i, &x)| if i < past * row { x } else { f32::NAN }).collect() };
    for ctx in [gpu(), gpu_kernels()].into_iter().flatten() {
        for window in [0, 1000] {
            let what = format!("decode attention over {n} tokens, window {window}, {:?} kernels", ctx.kernel_paths());
            // the token's key and value come apart and are stored into the caches' last rows
            let (k_cache, v_cache) = (upload(ctx, &poisoned_last(&k)), upload(ctx, &poisoned_last(&v)));
            let (k_new, v_new) = (upload(ctx, &k[past * row..]), upload(ctx, &v[past * row..]));
            let out = poisoned(ctx, nh * hs);
            let token = DecodeToken { q: &upload(ctx, &q), out: &out, new: Some((&k_new, &v_new)), row: 0, past, rope: None };
            let d = AttentionDims { window, ..AttentionDims::causal(1, 1, nh, nkv, hs) };
            attention_decode(ctx, token, (&k_cache, &v_cache), &poisoned(ctx, decode_scratch_len(nh, hs, n)), d).unwrap();
            assert_close(&what, &read(ctx, &out), &want(window), ATTN.0, ATTN.1);
            assert!(read(ctx, &k_cache) == k && read(ctx, &v_cache) == v, "{what}: the token's key and value stored into the caches");
        }
        // lavapipe refuses a context past its loop limit's reach (before the buffers' checks;
        // the GPU kernels' splits of at most 1/32 of the keys reach further)
        if ctx.is_llvmpipe() {
            let token = DecodeToken { q: &upload(ctx, &q), out: &poisoned(ctx, nh * hs), new: None, row: 0, past: 100_000_000, rope: None };
            let err = attention_decode(ctx, token, (&upload(ctx, &k), &upload(ctx, &v)), &poisoned(ctx, nh), AttentionDims::causal(1, 1, nh, nkv, hs)).unwrap_err();
            assert!(err.to_string().contains("lavapipe's limit"), "{err}");
        }
    }
}

#[test]
fn decode_attention_splits_long_contexts_over_workgroups() {
    // On the GPU kernel paths a token over more than 256 keys splits each head's keys over
    // several workgroups, and a second launch combines them: contexts at the edge (256 keys:
    // one workgroup; 257: two), over a window, with the token's key and value appended and
    // with rope applied by the launches. The CPU's attention of the rotated sequence's last
    // token, and the launches the kernels made.
    let Some(own) = hearth_tests::own_gpu() else { return };
    let ctx = &own.with_kernel_paths(hearth_core::gpu::KernelPaths::Gpu);
    let mut rng = Rng::new(13);
    let (nh, nkv, hs) = (6, 2, 16);
    for (past, window, split) in [(255, 0, false), (256, 0, true), (600, 0, true), (1999, 0, true), (1999, 300, true), (9000, 0, true)] {
        let n = past + 1;
        let what = format!("decode attention over {n} tokens, window {window}");
        let (q, k, v) = (u(&mut rng, nh * hs), u(&mut rng, n * nkv * hs), u(&mut rng, n * nkv * hs));
        let dims = |heads: usize, n: usize| rope::RopeDims { n, heads, kv_heads: nkv, head_size: hs, rotary: hs, theta: 10000.0, scaling: Default::default(), longrope: None };
        let (mut q_rot, mut k_rot) = (vec![0.0; q.len()], vec![0.0; k.len()]);
        cpu::rope(&mut q_rot, &to_f64(&q), &[past as u32], &dims(nh, 1), 1.0);
        cpu::rope(&mut k_rot, &to_f64(&k), &(0..n as u32).collect::<Vec<_>>(), &dims(nkv, n), 1.0);
        let mut want = vec![0.0; nh * hs];
        let sizes = AttnSizes { window, ..AttnSizes::causal(1, n, nh, nkv, hs) };
        cpu::attention_forward_token(&mut want, &q_rot, &k_rot, &to_f64(&v), &vec![0; n], sizes, 0, past);
        // the cache holds the earlier keys rotated, its last row NaN until the launch stores
        // the token's own (given unrotated)
        let row = nkv * hs;
        let cached = |x: &[f32]| -> Vec<f32> { x.iter().enumerate().map(|(i, &x)| if i < past * row { x } else { f32::NAN }).collect() };
        let k_rot32: Vec<f32> = k_rot.iter().map(|&x| x as f32).collect();
        let (k_cache, v_cache) = (upload(ctx, &cached(&k_rot32)), upload(ctx, &cached(&v)));
        let (k_new, v_new) = (upload(ctx, &k[past * row..]), upload(ctx, &v[past * row..]));
        let out = poisoned(ctx, nh * hs);
        let token = DecodeToken { q: &upload(ctx, &q), out: &out, new: Some((&k_new, &v_new)), row: 0, past, rope: Some(dims(nh, 1)) };
        let d = AttentionDims { window, ..AttentionDims::causal(1, 1, nh, nkv, hs) };
        // a scratch of the scores alone is too short where the keys split
        let short = attention_decode(ctx, token, (&k_cache, &v_cache), &poisoned(ctx, nh * n), d);
        assert_eq!(short.is_err(), split, "{what}");
        ctx.profile_begin();
        attention_decode(ctx, token, (&k_cache, &v_cache), &poisoned(ctx, decode_scratch_len(nh, hs, n)), d).unwrap();
        let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
        assert_close(&what, &read(ctx, &out), &want, ATTN.0, ATTN.1);
        assert_close(&format!("{what}: the token's rotated key stored into the cache"), &read(ctx, &k_cache)[past * row..], &k_rot[past * row..], 1e-5, 1e-5);
        assert!(read(ctx, &v_cache)[past * row..] == v[past * row..], "{what}: the token's value stored into the cache");
        let launches = |entry: &str| kernels.iter().filter(|(k, _)| k.contains(&format!(":{entry} ["))).map(|(_, s)| s.launches).sum::<u64>();
        assert_eq!((launches("attention_decode"), launches("attention_decode_combine")), (1, split as u64), "{what}: {kernels:?}");
    }
}

#[test]
fn decode_attention_of_a_batch_in_one_launch_matches_each_token_alone() {
    // A server's requests: each sequence's cache a part of one pair of buffers (in another
    // order than the batch's rows), their tokens attending in one launch, keys and values
    // appended and rope applied by it. Contexts short and long (on the GPU kernel paths the
    // long ones split their keys, the short ones in the same launch not), without and with a
    // window, on both kernel paths: exactly what a launch per token gives (the same sums in
    // the same order), and the same keys and values stored, each into its own cache alone.
    let mut rng = Rng::new(14);
    let (nh, nkv, hs, capacity) = (6, 2, 16, 2100);
    let row = nkv * hs;
    let pasts = [0, 1999, 255, 40, 600];
    let slots = [3, 0, 4, 1, 2];
    let dims = |heads: usize| rope::RopeDims { n: 1, heads, kv_heads: nkv, head_size: hs, rotary: hs, theta: 10000.0, scaling: Default::default(), longrope: None };
    let per_row = decode_scratch_len(nh, hs, capacity);
    // contexts of their own, so that their launches are counted alone
    let Some(own) = hearth_tests::own_gpu() else { return };
    let own_gpu_kernels = hearth_tests::own_gpu().expect("a second context").with_kernel_paths(hearth_core::gpu::KernelPaths::Gpu);
    for ctx in [&own, &own_gpu_kernels] {
        for window in [0, 300] {
            let what = format!("a batch's decode attention, window {window}, {:?} kernels", ctx.kernel_paths());
            let d = AttentionDims { window, ..AttentionDims::causal(1, 1, nh, nkv, hs) };
            let rows = pasts.len();
            let (q, k_new, v_new) = (u(&mut rng, rows * nh * hs), u(&mut rng, rows * row), u(&mut rng, rows * row));
            let (k_all, v_all) = (u(&mut rng, slots.len() * capacity * row), u(&mut rng, slots.len() * capacity * row));
            let (k_caches, v_caches) = (upload(ctx, &k_all), upload(ctx, &v_all));
            let seqs: Vec<BatchSeq> = pasts.iter().zip(slots).map(|(&past, slot)| BatchSeq { past, at: slot * capacity * row }).collect();
            let table: Vec<f32> = decode_batch_table(&seqs).into_iter().map(f32::from_bits).collect();
            let out = poisoned(ctx, rows * nh * hs);
            let (q_b, k_new_b, v_new_b, table_b) = (upload(ctx, &q), upload(ctx, &k_new), upload(ctx, &v_new), upload(ctx, &table));
            let batch = DecodeBatch { q: &q_b, out: &out, new: (&k_new_b, &v_new_b), rope: Some(dims(nh)), caches: (&k_caches, &v_caches), seqs: &seqs, table: &table_b };
            ctx.profile_begin();
            attention_decode_batch(ctx, batch, &poisoned(ctx, rows * per_row), per_row, d).unwrap();
            let kernels = pollster::block_on(ctx.profile_end()).unwrap().kernels;
            let launches = |entry: &str| kernels.iter().filter(|(k, _)| k.contains(&format!(":{entry} ["))).map(|(_, s)| s.launches).sum::<u64>();
            let gpu_paths = ctx.kernel_paths() == hearth_core::gpu::KernelPaths::Gpu;
            assert_eq!((launches("attention_decode"), launches("attention_decode_combine")), (1, gpu_paths as u64), "{what}: {kernels:?}");
            let (got, k_got, v_got) = (read(ctx, &out), read(ctx, &k_caches), read(ctx, &v_caches));
            let (mut k_want, mut v_want) = (k_all.clone(), v_all.clone());
            for (r, s) in seqs.iter().enumerate() {
                // the same token alone, over a cache of its own
                let part = |all: &[f32]| all[s.at..s.at + capacity * row].to_vec();
                let (k_one, v_one) = (upload(ctx, &part(&k_all)), upload(ctx, &part(&v_all)));
                let (k_r, v_r) = (upload(ctx, &k_new[r * row..(r + 1) * row]), upload(ctx, &v_new[r * row..(r + 1) * row]));
                let one = poisoned(ctx, nh * hs);
                let token = DecodeToken { q: &upload(ctx, &q[r * nh * hs..(r + 1) * nh * hs]), out: &one, new: Some((&k_r, &v_r)), row: 0, past: s.past, rope: Some(dims(nh)) };
                attention_decode(ctx, token, (&k_one, &v_one), &poisoned(ctx, per_row), d).unwrap();
                assert!(got[r * nh * hs..(r + 1) * nh * hs] == read(ctx, &one)[..], "{what}: row {r} (past {}) against its token alone", s.past);
                k_want[s.at..s.at + capacity * row].copy_from_slice(&read(ctx, &k_one));
                v_want[s.at..s.at + capacity * row].copy_from_slice(&read(ctx, &v_one));
            }
            assert!(k_got == k_want && v_got == v_want, "{what}: the keys and values stored, each into its own cache");
        }
    }
    // what the launch refuses: a scratch too short for a row, a cache past its buffer, a
    // table of fewer rows
    let Some(ctx) = gpu() else { return };
    let d = AttentionDims::causal(1, 1, nh, nkv, hs);
    let (q, new) = (upload(ctx, &vec![0.0; 2 * nh * hs]), upload(ctx, &vec![0.0; 2 * row]));
    let (caches, out) = (upload(ctx, &vec![0.0; 2 * 100 * row]), poisoned(ctx, 2 * nh * hs));
    let seqs = [BatchSeq { past: 10, at: 0 }, BatchSeq { past: 99, at: 100 * row }];
    let table = upload(ctx, &decode_batch_table(&seqs).into_iter().map(f32::from_bits).collect::<Vec<_>>());
    let scratch = poisoned(ctx, 2 * decode_scratch_len(nh, hs, 100));
    let launch = |seqs: &[BatchSeq], table: &hearth_core::GpuBuffer, per_row: usize| {
        let batch = DecodeBatch { q: &q, out: &out, new: (&new, &new), rope: None, caches: (&caches, &caches), seqs, table };
        attention_decode_batch(ctx, batch, &scratch, per_row, d).map_err(|e| e.to_string())
    };
    assert!(launch(&seqs, &table, decode_scratch_len(nh, hs, 100)).is_ok());
    let err = launch(&seqs, &table, nh * 50).unwrap_err();
    assert!(err.contains("row 1") && err.contains("too short"), "{err}");
    let err = launch(&[seqs[0], BatchSeq { past: 100, at: 100 * row }], &table, decode_scratch_len(nh, hs, 101)).unwrap_err();
    assert!(err.contains("row 1") && err.contains("k_caches"), "{err}");
    let err = launch(&seqs, &upload(ctx, &[0.0; 2]), decode_scratch_len(nh, hs, 100)).unwrap_err();
    assert!(err.contains("table"), "{err}");
}

#[test]
fn cpu_attention_backward_matches_finite_differences() {
    let mut rng = Rng::new(9);
    // a window of 3 and a scale other than 1/√HS
    let s = AttnSizes { scale: 0.4, window: 3, ..AttnSizes::causal(2, 5, 4, 2, 3) };
    let (nq, nk) = (s.b * s.t * s.nh * s.hs, s.b * s.t * s.nkv * s.hs);
    let (q, k, v, g) = (to_f64(&u(&mut rng, nq)), to_f64(&u(&mut rng, nk)), to_f64(&u(&mut rng, nk)), to_f64(&u(&mut rng, nq)));
    let seg = vec![0, 0, 0, 1, 1, 0, 0, 0, 0, 0];
    let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nk], vec![0.0; nk]);
    cpu::attention_backward(&mut dq, &mut dk, &mut dv, &g, &q, &k, &v, &seg, s);
    let loss = |q: &[f64], k: &[f64], v: &[f64]| {
        let mut o = vec![0.0; nq];
        cpu::attention_forward(&mut o, q, k, v, &seg, s);
        dot(&o, &g)
    };
    assert_grad("dq", &dq, &finite_diff(&mut |x| loss(x, &k, &v), &q, &(0..nq).collect::<Vec<_>>(), 1e-6));
    assert_grad("dk", &dk, &finite_diff(&mut |x| loss(&q, x, &v), &k, &(0..nk).collect::<Vec<_>>(), 1e-6));
    assert_grad("dv", &dv, &finite_diff(&mut |x| loss(&q, &k, x), &v, &(0..nk).collect::<Vec<_>>(), 1e-6));
}

#[test]
fn cross_entropy_matches_cpu() {
    with_each_reduction!(ctx => {
        let mut rng = Rng::new(10);
        for _ in 0..3 {
            let (r, v) = (1 + rng.below(20), 2 + rng.below(3000));
            let logits: Vec<f32> = rng.vec_uniform(r * v, -8.0, 8.0);
            let targets: Vec<u32> = (0..r).map(|i| if i % 3 == 1 { cross_entropy::IGNORE } else { rng.below(v) as u32 }).collect();
            // per-row weights of either sign, as preference losses give them
            let weights: Vec<f32> = rng.vec_uniform(r, -1.0, 1.0);
            let (lb, tb, wb) = (upload(ctx, &logits), ctx.upload_u32(&targets).unwrap(), upload(ctx, &weights));
            let (losses, losses2, dl) = (poisoned(ctx, r), poisoned(ctx, r), poisoned(ctx, r * v));
            cross_entropy::cross_entropy_forward(ctx, &losses, &lb, &tb, r, v).unwrap();
            cross_entropy::cross_entropy_backward(ctx, &losses2, &dl, &lb, &tb, &wb, r, v).unwrap();
            let (mut wl, mut wd) = (vec![0.0; r], vec![0.0; r * v]);
            cpu::cross_entropy_forward(&mut wl, &to_f64(&logits), &targets, v);
            cpu::cross_entropy_backward(&mut wd, &to_f64(&logits), &targets, &to_f64(&weights), v);
            assert_close("ce losses", &read(ctx, &losses), &wl, ROW.0, ROW.1);
            assert_close("ce losses (backward pass)", &read(ctx, &losses2), &wl, ROW.0, ROW.1);
            assert_close("ce dlogits", &read(ctx, &dl), &wd, 1e-6, ROW.1);
        }
    });
}

#[test]
fn cpu_cross_entropy_backward_matches_finite_differences() {
    let mut rng = Rng::new(11);
    let (r, v) = (4, 7);
    let logits = to_f64(&u(&mut rng, r * v));
    let targets = [3u32, u32::MAX, 0, 6];
    let mut dl = vec![0.0; r * v];
    let weights = [0.5, 2.0, -1.5, 1.0 / 3.0];
    cpu::cross_entropy_backward(&mut dl, &logits, &targets, &weights, v);
    let mut loss = |x: &[f64]| {
        let mut l = vec![0.0; r];
        cpu::cross_entropy_forward(&mut l, x, &targets, v);
        l.iter().zip(&weights).map(|(l, w)| l * w).sum::<f64>()
    };
    assert_grad("dlogits", &dl, &finite_diff(&mut loss, &logits, &(0..r * v).collect::<Vec<_>>(), 1e-6));
}

#[test]
fn adamw_and_grad_norm_match_cpu() {
    with_each_reduction!(ctx => {
        let mut rng = Rng::new(12);
        let sizes = [1usize, 300, 5000, 70_000];
        let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| u(&mut rng, n)).collect();
        let bufs: Vec<_> = grads.iter().map(|g| upload(ctx, g)).collect();
        let list: Vec<_> = bufs.iter().zip(sizes).collect();
        let (out, sums) = (poisoned(ctx, 2), poisoned(ctx, grad_norm::PARTS * sizes.len()));
        let norm: f64 = grads.iter().flatten().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
        grad_norm::grad_norm(ctx, &out, &sums, &list, 1.0).unwrap();
        assert_close("grad norm, clip", &read(ctx, &out), &[norm, (1.0 / (norm + 1e-6)).min(1.0)], 1e-4, 1e-5);

        let cfg = adamw::AdamwConfig { lr: 1e-2, weight_decay: 0.1, ..Default::default() };
        let n = 5000;
        let (p0, m0, v0) = (u(&mut rng, n), u(&mut rng, n), rng.vec_uniform(n, 0.0, 1.0));
        let (pb, mb, vb) = (upload(ctx, &p0), upload(ctx, &m0), upload(ctx, &v0));
        let (mut p, mut m, mut v) = (to_f64(&p0), to_f64(&m0), to_f64(&v0));
        let clip = read(ctx, &out)[1] as f64;
        for step in 1..=3 {
            adamw::adamw_update(ctx, &pb, &mb, &vb, &bufs[2], &out, n, step, &cfg).unwrap();
            cpu::adamw_update(&mut p, &mut m, &mut v, &to_f64(&grads[2]), clip, step as i32, 1e-2, 0.9, 0.999, 1e-8, 0.1);
        }
        assert_close("adamw param", &read(ctx, &pb), &p, 1e-5, 1e-4);
        assert_close("adamw m", &read(ctx, &mb), &m, 1e-6, 1e-5);
        assert_close("adamw v", &read(ctx, &vb), &v, 1e-6, 1e-5);
    });
}

/// LoRA's forward and backward, with and without dropout, on the kernels for this adapter
/// (lavapipe's register kernels run dropout as launches around the products) and on the
/// GPU kernels (the tiled matmuls apply the mask themselves).
#[test]
fn lora_matches_cpu() {
    for ctx in [hearth_tests::gpu(), hearth_tests::gpu_kernels()].into_iter().flatten() {
        let mut rng = Rng::new(13);
        for (m, d_in, d_out, rank) in [(17, 64, 48, 8), (33, 36, 20, 3)] {
            for (p, seed) in [(0.0, 0), (0.3, 77)] {
                lora_case(ctx, &mut rng, lora::LoraDims { m, d_in, d_out, rank, scale: 2.0, accumulate: false, dropout: (p, seed) });
            }
        }
    }
}

fn lora_case(ctx: &hearth_core::GpuContext, rng: &mut Rng, d: lora::LoraDims) {
    let lora::LoraDims { m, d_in, d_out, rank, .. } = d;
    let (p, seed) = d.dropout;
    let what = format!("{:?} kernels, {d:?}", ctx.kernel_paths());
    let (x, a, b, y0, dy) = (u(rng, m * d_in), u(rng, rank * d_in), u(rng, d_out * rank), u(rng, m * d_out), u(rng, m * d_out));
    let (xb, ab, bb, dyb) = (upload(ctx, &x), upload(ctx, &a), upload(ctx, &b), upload(ctx, &dy));
    let (y, h) = (upload(ctx, &y0), poisoned(ctx, m * rank));
    lora::lora_forward(ctx, &y, &h, &xb, &ab, &bb, d).unwrap();
    // Reference: xd = dropout(x); h = xd·Aᵀ; y = y0 + scale·h·Bᵀ.
    let (af, bf) = (to_f64(&a), to_f64(&b));
    let mut xd = vec![0.0; m * d_in];
    cpu::dropout_forward(&mut xd, &to_f64(&x), p, seed, 0.0);
    let mut hr = vec![0.0; m * rank];
    cpu::matmul_forward(&mut hr, &xd, &af, m, rank, d_in);
    let mut hb = vec![0.0; m * d_out];
    cpu::matmul_forward(&mut hb, &hr, &bf, m, d_out, rank);
    let want: Vec<f64> = y0.iter().zip(&hb).map(|(&y, p)| y as f64 + 2.0 * p).collect();
    assert_close(&format!("lora y ({what})"), &read(ctx, &y), &want, 1e-4, 1e-4);
    assert_close(&format!("lora h ({what})"), &read(ctx, &h), &hr, 1e-4, 1e-4);

    let (da, db, dh) = (poisoned(ctx, rank * d_in), poisoned(ctx, d_out * rank), poisoned(ctx, m * rank));
    let dx0 = u(rng, m * d_in);
    let dx = upload(ctx, &dx0);
    lora::lora_backward(ctx, &da, &db, &dx, 1.0, &dh, &dyb, &xb, &h, &ab, &bb, d).unwrap();
    // dx_beta 0 overwrites whatever dx held
    let dx_only = poisoned(ctx, m * d_in);
    lora::lora_backward(ctx, &poisoned(ctx, rank * d_in), &poisoned(ctx, d_out * rank), &dx_only, 0.0, &dh, &dyb, &xb, &h, &ab, &bb, d).unwrap();
    let dyf: Vec<f64> = to_f64(&dy).iter().map(|g| 2.0 * g).collect(); // scale folded in
    let (mut wdb, mut wdh, mut wda, mut wdxd) = (vec![0.0; d_out * rank], vec![0.0; m * rank], vec![0.0; rank * d_in], vec![0.0; m * d_in]);
    cpu::matmul_backward_weight(&mut wdb, &dyf, &hr, m, d_out, rank);
    cpu::matmul_backward_input(&mut wdh, &dyf, &bf, m, d_out, rank);
    cpu::matmul_backward_weight(&mut wda, &wdh, &xd, m, rank, d_in);
    cpu::matmul_backward_input(&mut wdxd, &wdh, &af, m, rank, d_in);
    // only the kept inputs get the LoRA path's gradient
    let mut wdx = vec![0.0; m * d_in];
    cpu::dropout_forward(&mut wdx, &wdxd, p, seed, 0.0);
    assert_close(&format!("lora dx, overwritten ({what})"), &read(ctx, &dx_only), &wdx, 1e-4, 1e-4);
    let wdx: Vec<f64> = wdx.iter().zip(&dx0).map(|(a, &b)| a + b as f64).collect();
    assert_close(&format!("lora dB ({what})"), &read(ctx, &db), &wdb, 1e-4, 1e-4);
    assert_close(&format!("lora dA ({what})"), &read(ctx, &da), &wda, 1e-4, 1e-4);
    assert_close(&format!("lora dx ({what})"), &read(ctx, &dx), &wdx, 1e-4, 1e-4);
}

#[test]
fn dropout_matches_cpu() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(21);
        for (n, p, beta) in [(1, 0.5, 0.0), (1000, 0.1, 1.0), (70_001, 0.3, 0.5), (513, 0.0, 0.0)] {
            let (x, prior) = (u(&mut rng, n), u(&mut rng, n));
            let seed = rng.next_u64() as u32;
            let out = upload(ctx, &prior);
            dropout::dropout_forward(ctx, &out, &upload(ctx, &x), n, p, seed, beta as f32).unwrap();
            let mut want = to_f64(&prior);
            cpu::dropout_forward(&mut want, &to_f64(&x), p, seed, beta);
            assert_close("dropout", &read(ctx, &out), &want, ELEM.0, ELEM.1);
        }
        // the kernels take vec4s; past n they leave the buffer as it was
        let prior: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let (out, ones) = (upload(ctx, &prior), upload(ctx, &[1.0; 8]));
        dropout::dropout_forward(ctx, &out, &ones, 5, 0.0, 3, 0.0).unwrap();
        assert_eq!(read(ctx, &out), [1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 6.0, 7.0]);
        residual::residual_accumulate(ctx, &out, &ones, 2.0, 6).unwrap();
        assert_eq!(read(ctx, &out), [3.0, 3.0, 3.0, 3.0, 3.0, 11.0, 6.0, 7.0]);
        residual::residual_forward(ctx, &out, &ones, &ones, 1).unwrap();
        assert_eq!(read(ctx, &out), [2.0, 3.0, 3.0, 3.0, 3.0, 11.0, 6.0, 7.0]);
        // about p of a large input is dropped
        let kept = (0..100_000u32).filter(|&i| cpu::dropout_keep(i, 7, 0.25)).count();
        assert!((kept as f64 / 100_000.0 - 0.75).abs() < 0.01, "kept {kept} of 100000 at p = 0.25");
        assert!(dropout::dropout_forward(ctx, &poisoned(ctx, 4), &poisoned(ctx, 4), 4, 1.0, 0, 0.0).is_err());
    });
}

/// Arenas (tensors as views of one buffer, at the adapter's offset alignment): each view
/// reads and writes only its part, the gaps stay zero, and AdamW over the whole arena equals
/// AdamW over chunks of it (how an arena past the storage binding limit is updated).
#[test]
fn arena_views_keep_to_their_parts() {
    with_gpu!(ctx => {
        let mut rng = Rng::new(11);
        let parts = [37, 300, 5, 129];
        let arenas: Vec<_> = (0..5).map(|_| ctx.alloc_arena(&parts).unwrap()).collect();
        assert!(read(ctx, &arenas[0].whole).iter().all(|&x| x == 0.0), "an arena starts zeroed");
        let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
        let offsets: Vec<u64> = arenas[0].views.iter().map(|v| v.offset()).collect();
        assert!(offsets.iter().all(|o| o % align == 0), "{offsets:?}");
        let fill = |a: &hearth_core::gpu::Arena, rng: &mut Rng| -> Vec<Vec<f32>> {
            let data: Vec<Vec<f32>> = parts.iter().map(|&n| rng.vec_uniform(n, -1.0, 1.0)).collect();
            for (v, d) in a.views.iter().zip(&data) {
                ctx.write_f32(v, d);
            }
            data
        };
        let (p, g) = (fill(&arenas[0], &mut rng), fill(&arenas[1], &mut rng));
        for (v, d) in arenas[2].views.iter().zip(&p) {
            ctx.write_f32(v, d);
        }
        assert_eq!(pollster::block_on(arenas[0].read_parts(ctx)).unwrap(), p, "each view reads back its own part");
        let clip = upload(ctx, &[0.0, 1.0]);
        let cfg = adamw::AdamwConfig { lr: 0.1, weight_decay: 0.01, ..Default::default() };
        let (m1, v1, m2, v2) = (ctx.alloc_arena(&parts).unwrap(), ctx.alloc_arena(&parts).unwrap(), &arenas[3], &arenas[4]);
        let whole = |a: &hearth_core::gpu::Arena| a.whole.len_words();
        adamw::adamw_update(ctx, &arenas[0].whole, &m1.whole, &v1.whole, &arenas[1].whole, &clip, whole(&arenas[0]), 1, &cfg).unwrap();
        // the same update in chunks of one alignment unit
        let chunks = |a: &hearth_core::gpu::Arena| a.chunks(align, align);
        for (((param, grad), m), v) in chunks(&arenas[2]).iter().zip(&chunks(&arenas[1])).zip(&chunks(m2)).zip(&chunks(v2)) {
            adamw::adamw_update(ctx, param, m, v, grad, &clip, grad.len_words(), 1, &cfg).unwrap();
        }
        let (a, b) = (read(ctx, &arenas[0].whole), read(ctx, &arenas[2].whole));
        assert_eq!(a, b, "AdamW over the whole arena and over its chunks");
        let updated = pollster::block_on(arenas[0].read_parts(ctx)).unwrap();
        for ((u, p), g) in updated.iter().zip(&p).zip(&g) {
            // one AdamW step moves every weight by about lr against its gradient's sign
            for ((&u, &p), &g) in u.iter().zip(p).zip(g) {
                assert!(((p - u) - 0.1 * g.signum() - 0.001 * p).abs() < 1e-3, "{p} -> {u} (grad {g})");
            }
        }
        let total: usize = parts.iter().sum();
        let nonzero = a.iter().filter(|&&x| x != 0.0).count();
        assert_eq!(nonzero, total, "the gaps between the parts stay zero");
    });
}

#[test]
fn picked_tokens_match_the_hosts() {
    // Greedy: the first of equal largest values (few levels: many ties), -inf, a largest value
    // first or last, lengths around the workgroup's 256 and a vocabulary's. Sampled: the same
    // logits at temperatures, top-k and top-p (ties at the thresholds among the levels), draws
    // and seeds of their own. Repetition penalties above and below 1, greedy and sampled, on
    // seen tokens that include the most likely (positive and negative logits). Each row alone
    // and all of them as the rows of launches of 16, their masks at words of no alignment,
    // each left holding its pick's bit and nothing else new.
    use hearth_core::model::sampling::{draw_score, penalize, pick_token, seed_hash};
    use hearth_core::ops::sample::{pick_tokens, seen_mask, seen_words, SeenTokens, TokenPick};
    with_gpu!(ctx => {
        let mut rng = Rng::new(31);
        let (mut picks_compared, mut near_ties) = (0, 0);
        for n in [1, 2, 255, 256, 257, 1000, 49_152, 151_936] {
            let levels: Vec<f32> = (0..n).map(|_| (rng.below(7) as f32 - 3.0) * 0.5).collect();
            let mut first = levels.clone();
            first[0] = 9.0;
            let mut last = levels.clone();
            last[n - 1] = 9.0;
            let fine: Vec<f32> = u(&mut rng, n).iter().map(|x| 8.0 * x).collect();
            let mut none = vec![f32::NEG_INFINITY; n];
            if n > 3 {
                none[n - 2] = -1e30;
            }
            let logits = [("levels", levels), ("largest first", first), ("largest last", last), ("uniform", fine), ("-inf", none)];
            let sampled = |i: usize| TokenPick {
                temperature: [1.0, 0.7, 1.5, 0.3][i % 4],
                top_k: [0, 0, 1, 40, 3][i % 5],
                top_p: [1.0, 0.9, 0.5, 1.0, 0.0, 0.95][i % 6],
                repetition_penalty: [1.0, 1.3, 1.0, 0.8, 2.0, 1.0, 1.1][i % 7],
                seed_hash: seed_hash(i as u64 / 3),
                draw: (i % 3) as u32,
            };
            // (which logits, how): every logits greedy, and greedy after a penalty; the uniform
            // and the levels' sampled
            let mut rows: Vec<(usize, TokenPick)> = (0..logits.len()).map(|l| (l, TokenPick::GREEDY)).collect();
            rows.extend((0..logits.len()).map(|l| (l, TokenPick { repetition_penalty: [1.5, 0.5][l % 2], ..TokenPick::GREEDY })));
            rows.extend((0..if n > 50_000 { 6 } else { 24 }).map(|i| (if i % 2 == 0 { 3 } else { 0 }, sampled(i))));
            // each row's seen tokens: its logits' most likely and a few others
            let seen: Vec<Vec<u32>> = rows
                .iter()
                .map(|(l, _)| {
                    let most = hearth_core::model::sampling::argmax(&logits[*l].1);
                    std::iter::once(most).chain((0..1 + rng.below(40)).map(|_| rng.below(n) as u32)).collect()
                })
                .collect();
            let words = seen_words(n);
            let out = poisoned(ctx, rows.len());
            let mut check = |got: f32, row: usize, launch: &str| {
                let ((l, pick), seen) = (&rows[row], &seen[row]);
                let (what, x) = &logits[*l];
                let mut x = x.clone();
                penalize(&mut x, seen, pick.repetition_penalty);
                let want = pick_token(&x, pick);
                picks_compared += 1;
                if got == want as f32 || pick.temperature <= 0.0 {
                    assert_eq!(got, want as f32, "{what}, {n} values, {pick:?} ({launch})");
                    return;
                }
                // a draw's two best perturbed logits agreeing to rounding may swap
                let (g, w) = (draw_score(&x, pick, got as u32), draw_score(&x, pick, want));
                assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{what}, {n} values, {pick:?} ({launch}): picked {got} (score {g}), the host {want} (score {w})");
                near_ties += 1;
            };
            // the masks after a launch: each row's seen tokens and its pick
            let check_masks = |masks: &[f32], at: &[u32], picked: &[f32], first_row: usize, launch: &str| {
                for (r, (&at, &id)) in at.iter().zip(picked).enumerate() {
                    let want = seen_mask(&[&seen[first_row + r][..], &[id as u32]].concat(), n);
                    let got: Vec<u32> = masks[at as usize..][..words].iter().map(|w| w.to_bits()).collect();
                    assert!(got == want, "{n} values, row {} ({launch}): the mask after picking {id}", first_row + r);
                }
            };
            for (r, row) in rows.iter().enumerate() {
                let at = [5];
                let masks = upload(ctx, &[vec![0.0; 5], seen_mask(&seen[r], n).iter().map(|&w| f32::from_bits(w)).collect()].concat());
                pick_tokens(ctx, &out, &upload(ctx, &logits[row.0].1), 0, &[row.1], &SeenTokens { masks: &masks, at: &at }, n).unwrap();
                let got = read(ctx, &out)[0];
                check(got, r, "alone");
                check_masks(&read(ctx, &masks), &at, &[got], r, "alone");
            }
            let all: Vec<f32> = rows.iter().flat_map(|(l, _)| logits[*l].1.clone()).collect();
            let picks: Vec<TokenPick> = rows.iter().map(|r| r.1).collect();
            // row r's mask at r·(words + 3) + 1
            let at: Vec<u32> = (0..rows.len()).map(|r| (r * (words + 3) + 1) as u32).collect();
            let mut masks = vec![0.0f32; rows.len() * (words + 3) + 1];
            for (r, &a) in at.iter().enumerate() {
                masks[a as usize..][..words].copy_from_slice(&seen_mask(&seen[r], n).iter().map(|&w| f32::from_bits(w)).collect::<Vec<_>>());
            }
            let masks = upload(ctx, &masks);
            pick_tokens(ctx, &out, &upload(ctx, &all), 0, &picks, &SeenTokens { masks: &masks, at: &at }, n).unwrap();
            let got = read(ctx, &out);
            for (r, &g) in got.iter().enumerate() {
                check(g, r, "in launches of 16");
            }
            check_masks(&read(ctx, &masks), &at, &got, 0, "in launches of 16");
        }
        assert!(near_ties * 100 <= picks_compared, "{near_ties} of {picks_compared} picks differ from the host's");
        let (out, masks) = (poisoned(ctx, 4), poisoned(ctx, 4));
        let pick = |n, at: &[u32]| pick_tokens(ctx, &out, &upload(ctx, &[1.0; 200]), 0, &[TokenPick::GREEDY], &SeenTokens { masks: &masks, at }, n).unwrap_err().to_string();
        let err = pick(0, &[0]);
        assert!(err.contains("pick_tokens: 0 logits a row"), "{err}");
        let err = pick(200, &[0]);
        assert!(err.contains("pick_tokens: seen holds 4 values, expected at least 7"), "{err}");
        let err = pick(8, &[0, 1]);
        assert!(err.contains("pick_tokens: 1 rows but 2 masks of seen tokens"), "{err}");
    });
}
