//! CPU reference implementations of every op, in f64, written for clarity rather than
//! speed. GPU kernels are tested against these; these are tested against finite
//! differences. Argument order follows the kernels: outputs first, then inputs, then sizes.

/// out(M,N) = inp(M,K)·weight(N,K)ᵀ
pub fn matmul_forward(out: &mut [f64], inp: &[f64], weight: &[f64], m: usize, n: usize, k: usize) {
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|r| inp[i * k + r] * weight[j * k + r]).sum();
        }
    }
}

/// dinp(M,K) = dout(M,N)·weight(N,K)
pub fn matmul_backward_input(dinp: &mut [f64], dout: &[f64], weight: &[f64], m: usize, n: usize, k: usize) {
    for i in 0..m {
        for r in 0..k {
            dinp[i * k + r] = (0..n).map(|j| dout[i * n + j] * weight[j * k + r]).sum();
        }
    }
}

/// dweight(N,K) = dout(M,N)ᵀ·inp(M,K)
pub fn matmul_backward_weight(dweight: &mut [f64], dout: &[f64], inp: &[f64], m: usize, n: usize, k: usize) {
    for j in 0..n {
        for r in 0..k {
            dweight[j * k + r] = (0..m).map(|i| dout[i * n + j] * inp[i * k + r]).sum();
        }
    }
}

/// The product of `kind` (MatmulKind's layouts: out = a·bᵀ, a·b or aᵀ·b over the dims m, n, k
/// of the forward it belongs to) into `out`.
pub fn matmul(kind: super::matmul::MatmulKind, out: &mut [f64], a: &[f64], b: &[f64], m: usize, n: usize, k: usize) {
    use super::matmul::MatmulKind;
    match kind {
        MatmulKind::Forward => matmul_forward(out, a, b, m, n, k),
        MatmulKind::BackwardInput => matmul_backward_input(out, a, b, m, n, k),
        MatmulKind::BackwardWeight => matmul_backward_weight(out, a, b, m, n, k),
    }
}

/// out(N, C) = wte[tokens]
pub fn embedding_forward(out: &mut [f64], tokens: &[u32], wte: &[f64], c: usize) {
    for (n, &t) in tokens.iter().enumerate() {
        out[n * c..][..c].copy_from_slice(&wte[t as usize * c..][..c]);
    }
}

/// out = weight ⊙ x·r, rstd = r = 1/sqrt(mean(x²) + eps), per row of C.
pub fn rmsnorm_forward(out: &mut [f64], rstd: &mut [f64], inp: &[f64], weight: &[f64], n: usize, c: usize, eps: f64) {
    for i in 0..n {
        let x = &inp[i * c..][..c];
        let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / c as f64 + eps).sqrt();
        rstd[i] = r;
        for j in 0..c {
            out[i * c + j] = weight[j] * x[j] * r;
        }
    }
}

/// dinp and dweight of rmsnorm_forward (rstd recomputed).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(dinp: &mut [f64], dweight: &mut [f64], dout: &[f64], inp: &[f64], weight: &[f64], n: usize, c: usize, eps: f64) {
    dweight.iter_mut().for_each(|d| *d = 0.0);
    for i in 0..n {
        let x = &inp[i * c..][..c];
        let g = &dout[i * c..][..c];
        let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / c as f64 + eps).sqrt();
        let dot: f64 = (0..c).map(|j| weight[j] * g[j] * x[j]).sum();
        for j in 0..c {
            dinp[i * c + j] = r * weight[j] * g[j] - x[j] * r * r * r * dot / c as f64;
            dweight[j] += g[j] * x[j] * r;
        }
    }
}

/// Rope's inverse frequency j of HS/2, with Llama 3's scaling when `scaling.factor` > 0.
pub fn rope_inv_freq(j: usize, hs: usize, theta: f64, scaling: &crate::ops::rope::RopeScaling) -> f64 {
    let f = 1.0 / theta.powf((2 * j) as f64 / hs as f64);
    if scaling.factor == 0.0 {
        return f;
    }
    let (factor, low, high, ctx) =
        (scaling.factor as f64, scaling.low_freq_factor as f64, scaling.high_freq_factor as f64, scaling.original_max_position as f64);
    let wavelen = 2.0 * std::f64::consts::PI / f;
    if wavelen < ctx / high {
        f
    } else if wavelen > ctx / low {
        f / factor
    } else {
        let smooth = (ctx / wavelen - low) / (high - low);
        (1.0 - smooth) * f / factor + smooth * f
    }
}

/// HF rotate_half rope over one tensor (N, H = `d.heads`, HS) with per-token positions on the
/// first `d.rotary` dims of each head (the rest pass through), with Llama 3's or LongRoPE's
/// frequencies; `sign` −1 is the backward (the transposed map). (The GPU's rope rotates a
/// layer's queries and keys together; the keys here are `RopeDims { heads: kv_heads, .. }`.)
pub fn rope(out: &mut [f64], inp: &[f64], pos: &[u32], d: &crate::ops::rope::RopeDims, sign: f64) {
    let (hs, half) = (d.head_size, d.rotary / 2);
    let mscale = d.longrope.map_or(1.0, |l| l.mscale as f64);
    // HF's f32 frequencies and f32 angles, then cos and sin exactly
    let freqs = crate::ops::rope::frequencies(d);
    for (n, &p) in pos.iter().enumerate() {
        for head in 0..d.heads {
            let base = (n * d.heads + head) * hs;
            out[base + d.rotary..base + hs].copy_from_slice(&inp[base + d.rotary..base + hs]);
            for j in 0..half {
                let (s, c) = ((p as f32 * freqs[j]) as f64).sin_cos();
                let (s, c) = (mscale * sign * s, mscale * c);
                let (x1, x2) = (inp[base + j], inp[base + j + half]);
                out[base + j] = x1 * c - x2 * s;
                out[base + j + half] = x2 * c + x1 * s;
            }
        }
    }
}

/// Sizes shared by the attention references: q (B,T,NH,HS), k/v (B,T,NKV,HS).
#[derive(Clone, Copy, Debug)]
pub struct AttnSizes {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
    /// Multiplies q·k (1/√HS for the usual attention).
    pub scale: f64,
    /// Keys t − window < j ≤ t only (0: all).
    pub window: usize,
}

impl AttnSizes {
    /// Plain causal attention: scale 1/√HS, no window.
    pub fn causal(b: usize, t: usize, nh: usize, nkv: usize, hs: usize) -> Self {
        AttnSizes { b, t, nh, nkv, hs, scale: 1.0 / (hs as f64).sqrt(), window: 0 }
    }

    fn at(&self, b: usize, t: usize, heads: usize, h: usize) -> usize {
        ((b * self.t + t) * heads + h) * self.hs
    }

    /// Softmax probabilities of query (b, h, t), `q_head` its HS values, over keys 0..=t of
    /// its segment (and window).
    fn probs(&self, q_head: &[f64], k: &[f64], seg: &[u32], b: usize, h: usize, t: usize) -> Vec<f64> {
        let kvh = h / (self.nh / self.nkv);
        let scale = self.scale;
        let scores: Vec<f64> = (0..=t)
            .map(|j| {
                if seg[b * self.t + j] != seg[b * self.t + t] || (self.window > 0 && t - j >= self.window) {
                    return f64::NEG_INFINITY;
                }
                let kj = self.at(b, j, self.nkv, kvh);
                scale * (0..self.hs).map(|d| q_head[d] * k[kj + d]).sum::<f64>()
            })
            .collect();
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    }
}

/// Causal GQA attention with segment masking; the naive T×T form.
pub fn attention_forward(out: &mut [f64], q: &[f64], k: &[f64], v: &[f64], seg: &[u32], s: AttnSizes) {
    let row = s.nh * s.hs;
    for b in 0..s.b {
        for t in 0..s.t {
            let at = s.at(b, t, s.nh, 0);
            attention_forward_token(&mut out[at..at + row], &q[at..at + row], k, v, seg, s, b, t);
        }
    }
}

/// [`attention_forward`]'s row for token t of sequence b alone, from its query alone (NH·HS
/// each): a decoded token's attention over its cache.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_token(out: &mut [f64], q: &[f64], k: &[f64], v: &[f64], seg: &[u32], s: AttnSizes, b: usize, t: usize) {
    for h in 0..s.nh {
        let kvh = h / (s.nh / s.nkv);
        let p = s.probs(&q[h * s.hs..(h + 1) * s.hs], k, seg, b, h, t);
        for d in 0..s.hs {
            out[h * s.hs + d] = (0..=t).map(|j| p[j] * v[s.at(b, j, s.nkv, kvh) + d]).sum();
        }
    }
}

/// dq, dk, dv of attention_forward for the upstream gradient dout.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(dq: &mut [f64], dk: &mut [f64], dv: &mut [f64], dout: &[f64], q: &[f64], k: &[f64], v: &[f64], seg: &[u32], s: AttnSizes) {
    dq.iter_mut().chain(dk.iter_mut()).chain(dv.iter_mut()).for_each(|x| *x = 0.0);
    let scale = s.scale;
    for b in 0..s.b {
        for h in 0..s.nh {
            let kvh = h / (s.nh / s.nkv);
            for t in 0..s.t {
                let qi = s.at(b, t, s.nh, h);
                let p = s.probs(&q[qi..qi + s.hs], k, seg, b, h, t);
                let dp: Vec<f64> = (0..=t)
                    .map(|j| (0..s.hs).map(|d| dout[qi + d] * v[s.at(b, j, s.nkv, kvh) + d]).sum())
                    .collect();
                let dsum: f64 = (0..=t).map(|j| p[j] * dp[j]).sum();
                for j in 0..=t {
                    let kj = s.at(b, j, s.nkv, kvh);
                    let ds = p[j] * (dp[j] - dsum) * scale;
                    for d in 0..s.hs {
                        dq[qi + d] += ds * k[kj + d];
                        dk[kj + d] += ds * q[qi + d];
                        dv[kj + d] += p[j] * dout[qi + d];
                    }
                }
            }
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// out = silu(gate)·up
pub fn swiglu_forward(out: &mut [f64], gate: &[f64], up: &[f64]) {
    for i in 0..out.len() {
        out[i] = gate[i] * sigmoid(gate[i]) * up[i];
    }
}

pub fn swiglu_backward(dgate: &mut [f64], dup: &mut [f64], dout: &[f64], gate: &[f64], up: &[f64]) {
    for i in 0..dout.len() {
        let (g, s) = (gate[i], sigmoid(gate[i]));
        dgate[i] = dout[i] * up[i] * s * (1.0 + g * (1.0 - s));
        dup[i] = dout[i] * g * s;
    }
}

/// gelu with PyTorch's tanh approximation (gelu_pytorch_tanh).
fn gelu_tanh(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
}

/// out = gelu_tanh(gate)·up
pub fn geglu_forward(out: &mut [f64], gate: &[f64], up: &[f64]) {
    for i in 0..out.len() {
        out[i] = gelu_tanh(gate[i]) * up[i];
    }
}

pub fn geglu_backward(dgate: &mut [f64], dup: &mut [f64], dout: &[f64], gate: &[f64], up: &[f64]) {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    for i in 0..dout.len() {
        let x = gate[i];
        let t = (k * (x + 0.044715 * x * x * x)).tanh();
        let grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
        dgate[i] = dout[i] * up[i] * grad;
        dup[i] = dout[i] * gelu_tanh(x);
    }
}

/// dst[r, dst_col + c] = src[r, src_col + c] for rows × cols, with the matrices' widths.
#[allow(clippy::too_many_arguments)]
pub fn block_copy(dst: &mut [f64], dst_stride: usize, dst_col: usize, src: &[f64], src_stride: usize, src_col: usize, rows: usize, cols: usize) {
    for r in 0..rows {
        for c in 0..cols {
            dst[r * dst_stride + dst_col + c] = src[r * src_stride + src_col + c];
        }
    }
}

/// shaders/fma_peak.wgsl: out[i] = the sum of 32 chains x ← x·m + c after `iters` rounds,
/// chain j of invocation i starting at (i mod 1024) / 1024 + j / 32.
pub fn fma_peak(out: &mut [f64], iters: usize, m: f64, c: f64) {
    for (i, o) in out.iter_mut().enumerate() {
        let s = (i % 1024) as f64 / 1024.0;
        *o = (0..32).map(|j| (0..iters).fold(s + j as f64 / 32.0, |x, _| x * m + c)).sum();
    }
}

/// shaders/fma_peak_coop.wgsl on side × side matrices: workgroup w's six matrices (A_0, A_1,
/// B_0..B_3, row-major) hold ((e·7 + w) mod 16 − 8) / 64 at element e of the six, and each of
/// its (32 / side)² blocks writes iters · A_a·B_b for a < 2, b < 4 (the 4a + b-th product,
/// row-major), `out` holding `groups` workgroups' blocks in turn.
pub fn fma_peak_coop(out: &mut [f64], side: usize, iters: usize) {
    let d2 = side * side;
    let per_group = (32 / side).pow(2) * 8 * d2;
    for (w, group) in out.chunks_mut(per_group).enumerate() {
        let value = |matrix: usize, row: usize, col: usize| {
            let e = matrix * d2 + row * side + col;
            ((e * 7 + w) % 16) as f64 / 64.0 - 0.125
        };
        for (k, product) in group.chunks_mut(d2).enumerate() {
            let (a, b) = ((k % 8) / 4, k % 4);
            for (at, o) in product.iter_mut().enumerate() {
                let (i, j) = (at / side, at % side);
                *o = iters as f64 * (0..side).map(|r| value(a, i, r) * value(2 + b, r, j)).sum::<f64>();
            }
        }
    }
}

/// out = a + b
pub fn residual_forward(out: &mut [f64], a: &[f64], b: &[f64]) {
    for i in 0..out.len() {
        out[i] = a[i] + b[i];
    }
}

/// Per-row NLL (0 where the target is u32::MAX) over logits (R, V).
pub fn cross_entropy_forward(losses: &mut [f64], logits: &[f64], targets: &[u32], v: usize) {
    for (r, &t) in targets.iter().enumerate() {
        let row = &logits[r * v..][..v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        losses[r] = if t == u32::MAX { 0.0 } else { lse - row[t as usize] };
    }
}

/// dlogits = weights[r]·(softmax − onehot), zero rows where the target is u32::MAX.
pub fn cross_entropy_backward(dlogits: &mut [f64], logits: &[f64], targets: &[u32], weights: &[f64], v: usize) {
    for (r, &t) in targets.iter().enumerate() {
        let row = &logits[r * v..][..v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
        for j in 0..v {
            dlogits[r * v + j] = if t == u32::MAX {
                0.0
            } else {
                weights[r] * ((row[j] - m).exp() / z - if j == t as usize { 1.0 } else { 0.0 })
            };
        }
    }
}

/// One torch.optim.AdamW step (step counts from 1) with the gradient scaled by `clip`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(param: &mut [f64], m: &mut [f64], v: &mut [f64], grad: &[f64], clip: f64, step: i32, lr: f64, beta1: f64, beta2: f64, eps: f64, wd: f64) {
    let (bc1, bc2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
    for i in 0..param.len() {
        let g = grad[i] * clip;
        param[i] *= 1.0 - lr * wd;
        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
        param[i] -= (lr / bc1) * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
    }
}

pub(crate) fn lowbias32(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// Whether dropout.wgsl keeps value `i` for `seed` at drop probability `p`.
pub fn dropout_keep(i: u32, seed: u32, p: f32) -> bool {
    let u = (lowbias32(i ^ lowbias32(seed)) >> 8) as f32 * (1.0 / 16_777_216.0);
    u >= p
}

/// out = beta·out + inp·keep/(1 − p).
pub fn dropout_forward(out: &mut [f64], inp: &[f64], p: f32, seed: u32, beta: f64) {
    for (i, (o, &x)) in out.iter_mut().zip(inp).enumerate() {
        let kept = if dropout_keep(i as u32, seed, p) { x / (1.0 - p as f64) } else { 0.0 };
        *o = beta * *o + kept;
    }
}
