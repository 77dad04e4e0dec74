// NF4 matmul (QLoRA): 4-bit NormalFloat codes, blocks of 64 with a double-quantized absmax:
//   absmax[b] = aux + scales[b / 256] · codes[b] / 127,  x = NF4[code] · absmax.
// Fused dequantization: the dense weight is never built; each step decodes 8 consecutive
// weights of one row in registers. W is (N, K) in the nn.Linear layout, blocks along K.
//   matmul_nf4_forward:        out(M,N) = beta·out + alpha · inp(M,K) · Wᵀ
//   matmul_nf4_backward_input: out(M,K) = beta·out + alpha · inp(M,N) · W     (dx = dy·W)
// Block layout: shaders/README.md and core/src/quant/. K must be a multiple of 64.

struct Params {
    M: u32,
    N: u32,
    K: u32,
    alpha: f32,
    beta: f32,
    aux: f32, // NF4: the absmax offset; unused by the other formats
}

@group(0) @binding(0) var<storage, read> w: array<u32>;       // 8 codes per word, element j at bits 4j
@group(0) @binding(1) var<storage, read> absq: array<u32>;    // i8 absmax codes, 4 per word
@group(0) @binding(2) var<storage, read> scales: array<f32>;  // one per 256 blocks
@group(0) @binding(3) var<storage, read> inp: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

var<private> NF4: array<f32, 16> = array<f32, 16>(
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);

// Weights k = 8·k8 .. 8·k8 + 7 of row n.
fn dequant8(n: u32, k8: u32) -> array<vec4<f32>, 2> {
    let e = n * p.K + 8u * k8;
    let b = e / 64u;
    let code = extractBits(i32(absq[b / 4u]), 8u * (b % 4u), 8u);
    let a = p.aux + scales[b / 256u] * f32(code) / 127.0;
    let q = w[e / 8u];
    return array<vec4<f32>, 2>(
        a * vec4<f32>(NF4[q & 15u], NF4[(q >> 4u) & 15u], NF4[(q >> 8u) & 15u], NF4[(q >> 12u) & 15u]),
        a * vec4<f32>(NF4[(q >> 16u) & 15u], NF4[(q >> 20u) & 15u], NF4[(q >> 24u) & 15u], NF4[q >> 28u]));
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
fn matmul_nf4_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
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
fn matmul_nf4_backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
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
