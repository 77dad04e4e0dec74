// GGUF Q4_1 matmul: blocks of 32 as (f16 d, f16 m, 16 bytes of nibbles in Q4_0's order),
// x = d·q + m; 20 bytes.
// Fused dequantization: the dense weight is never built; each step decodes 8 consecutive
// weights of one row in registers. W is (N, K) in the nn.Linear layout, blocks along K.
//   matmul_q4_1_forward:        out(M,N) = beta·out + alpha · inp(M,K) · Wᵀ
//   matmul_q4_1_backward_input: out(M,K) = beta·out + alpha · inp(M,N) · W     (dx = dy·W)
// Block layout: shaders/README.md and core/src/quant/. K must be a multiple of 32.

struct Params {
    M: u32,
    N: u32,
    K: u32,
    alpha: f32,
    beta: f32,
    aux: f32, // NF4: the absmax offset; unused by the other formats
}

@group(0) @binding(0) var<storage, read> w: array<u32>;   // raw blocks, row-major
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// The u16 at an even byte address of w.
fn read_u16(addr: u32) -> u32 {
    return (w[addr / 4u] >> (8u * (addr % 4u))) & 0xFFFFu;
}

// The u32 at an even (not necessarily 4-aligned) byte address of w: GGUF blocks of 18 or 34
// bytes start on 2-byte boundaries.
fn read_u32(addr: u32) -> u32 {
    let i = addr / 4u;
    if (addr % 4u == 0u) { return w[i]; }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

fn half_at(addr: u32) -> f32 {
    return unpack2x16float(read_u16(addr)).x;
}

// Nibbles of the 4 bytes of `word`, shifted by `shift` (0: low nibbles, 4: high).
fn nib4(word: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>(f32((word >> shift) & 15u), f32((word >> (8u + shift)) & 15u),
                     f32((word >> (16u + shift)) & 15u), f32((word >> (24u + shift)) & 15u));
}

// Weights k = 8·k8 .. 8·k8 + 7 of row n.
fn dequant8(n: u32, k8: u32) -> array<vec4<f32>, 2> {
    let k = 8u * k8;
    let base = (n * (p.K / 32u) + k / 32u) * 20u;
    let d = half_at(base);
    let m = half_at(base + 2u);
    let o = k % 32u;
    let q = base + 4u + o % 16u;
    let shift = select(0u, 4u, o >= 16u);
    return array<vec4<f32>, 2>(d * nib4(read_u32(q), shift) + m, d * nib4(read_u32(q + 4u), shift) + m);
}

// Writes alpha·v (+ beta·old) to out[idx].
fn store(idx: u32, v: f32) {
    var r = p.alpha * v;
    if (p.beta != 0.0) { r += p.beta * out[idx]; }
    out[idx] = r;
}

fn dot8(x: u32, w8: array<vec4<f32>, 2>) -> f32 {
    let a = vec4<f32>(inp[x], inp[x + 1u], inp[x + 2u], inp[x + 3u]);
    let b = vec4<f32>(inp[x + 4u], inp[x + 5u], inp[x + 6u], inp[x + 7u]);
    return dot(a, w8[0]) + dot(b, w8[1]);
}

// Each invocation: 4 rows of inp × 4 rows of W.
@compute @workgroup_size(8, 8, 1)
fn matmul_q4_1_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n0 = gid.x * 4u;
    let m0 = gid.y * 4u;
    if (n0 >= p.N || m0 >= p.M) { return; }
    var acc: array<vec4<f32>, 4>;
    for (var k8 = 0u; k8 < p.K / 8u; k8++) {
        let w0 = dequant8(min(n0, p.N - 1u), k8);
        let w1 = dequant8(min(n0 + 1u, p.N - 1u), k8);
        let w2 = dequant8(min(n0 + 2u, p.N - 1u), k8);
        let w3 = dequant8(min(n0 + 3u, p.N - 1u), k8);
        for (var i = 0u; i < 4u; i++) {
            let x = min(m0 + i, p.M - 1u) * p.K + 8u * k8;
            acc[i] += vec4<f32>(dot8(x, w0), dot8(x, w1), dot8(x, w2), dot8(x, w3));
        }
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            if (m0 + i < p.M && n0 + j < p.N) { store((m0 + i) * p.N + n0 + j, acc[i][j]); }
        }
    }
}

// Each invocation: 4 rows of dy × 8 columns of dx (one group of 8 along K).
@compute @workgroup_size(8, 8, 1)
fn matmul_q4_1_backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k8 = gid.x;
    let m0 = gid.y * 4u;
    if (k8 >= p.K / 8u || m0 >= p.M) { return; }
    var acc: array<array<vec4<f32>, 2>, 4>;
    for (var n = 0u; n < p.N; n++) {
        let w8 = dequant8(n, k8);
        for (var i = 0u; i < 4u; i++) {
            let g = inp[min(m0 + i, p.M - 1u) * p.N + n];
            acc[i][0] += g * w8[0];
            acc[i][1] += g * w8[1];
        }
    }
    for (var i = 0u; i < 4u; i++) {
        if (m0 + i < p.M) {
            for (var e = 0u; e < 8u; e++) { store((m0 + i) * p.K + 8u * k8 + e, acc[i][e / 4u][e % 4u]); }
        }
    }
}
