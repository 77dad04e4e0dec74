// NF4 matmul (QLoRA): 4-bit NormalFloat codes, blocks of 64 with a double-quantized absmax:
//   absmax[b] = aux + scales[b / 256] · codes[b] / 127,  x = NF4[code] · absmax.
// K must be a multiple of 64.

@group(0) @binding(0) var<storage, read> w: array<u32>;       // 8 codes per word, element j at bits 4j
@group(0) @binding(1) var<storage, read> absq: array<u32>;    // i8 absmax codes, 4 per word
@group(0) @binding(2) var<storage, read> scales: array<f32>;  // one per 256 blocks
@group(0) @binding(3) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// NF4's code value for the code at bits 4i .. 4i + 3 of q, by a tree of selects on its bits
// (each bit shifted into the sign, which x86's blend reads directly). The table is a
// constant: held in the uniform it made the large forward about 5 % slower; a private array or a
// uniform indexed per lane made the large kernels take minutes to compile.
fn nf4(q: u32, i: u32) -> f32 {
    let t = NF4_TABLE;
    let b0 = i32(q << (31u - 4u * i)) < 0;
    let l = vec4<f32>(select(t[0].x, t[0].y, b0), select(t[0].z, t[0].w, b0), select(t[1].x, t[1].y, b0), select(t[1].z, t[1].w, b0));
    let h = vec4<f32>(select(t[2].x, t[2].y, b0), select(t[2].z, t[2].w, b0), select(t[3].x, t[3].y, b0), select(t[3].z, t[3].w, b0));
    let b1 = i32(q << (30u - 4u * i)) < 0;
    let v = vec4<f32>(select(l.x, l.y, b1), select(l.z, l.w, b1), select(h.x, h.y, b1), select(h.z, h.w, b1));
    let b2 = i32(q << (29u - 4u * i)) < 0;
    return select(select(v.x, v.y, b2), select(v.z, v.w, b2), i32(q << (28u - 4u * i)) < 0);
}

// The code values of the 8 codes in word q (element j at bits 4j), not yet scaled.
fn nf4x8(q: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(vec4<f32>(nf4(q, 0u), nf4(q, 1u), nf4(q, 2u), nf4(q, 3u)),
                               vec4<f32>(nf4(q, 4u), nf4(q, 5u), nf4(q, 6u), nf4(q, 7u)));
}

// The absmax of block b (64 weights): its 8-bit code, rescaled by its group's scale.
fn absmax(b: u32) -> f32 {
    let code = extractBits(i32(absq[b / 4u]), 8u * (b % 4u), 8u);
    return p.aux + scales[b / 256u] * f32(code) / 127.0;
}

// Weights k = 8·k8 .. 8·k8 + 7 of row n.
fn dequant8(n: u32, k8: u32) -> array<vec4<f32>, 2> {
    let e = n * p.K + 8u * k8;
    let a = absmax(e / 64u);
    let v = nf4x8(w[e / 8u]);
    return array<vec4<f32>, 2>(a * v[0], a * v[1]);
}

// 32 weights of a row in registers: their absmax and their 4 words of codes.
struct Chunk {
    a: f32,
    q: vec4<u32>,
}

// Weights 32·c .. 32·c + 31 of row n.
fn load_chunk(n: u32, c: u32) -> Chunk {
    let e = n * p.K + 32u * c;
    let i = e / 8u;
    return Chunk(absmax(e / 64u), vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]));
}

// Weights 8·s .. 8·s + 7 of the chunk: the codes of word s.
fn decode8(ch: Chunk, s: u32) -> array<vec4<f32>, 2> {
    let v = nf4x8(select(select(ch.q.x, ch.q.y, s == 1u), select(ch.q.z, ch.q.w, s == 3u), s >= 2u));
    return array<vec4<f32>, 2>(ch.a * v[0], ch.a * v[1]);
}

// Σ weights 32·b .. 32·b + 31 of row n × x, scaled once.
fn dot32(n: u32, b: u32, x: array<vec4<f32>, 8>) -> f32 {
    let ch = load_chunk(n, b);
    let v0 = nf4x8(ch.q.x); let v1 = nf4x8(ch.q.y); let v2 = nf4x8(ch.q.z); let v3 = nf4x8(ch.q.w);
    return ch.a * (dot(v0[0], x[0]) + dot(v0[1], x[1]) + dot(v1[0], x[2]) + dot(v1[1], x[3])
                 + dot(v2[0], x[4]) + dot(v2[1], x[5]) + dot(v3[0], x[6]) + dot(v3[1], x[7]));
}
