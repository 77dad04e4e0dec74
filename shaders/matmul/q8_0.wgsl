// GGUF Q8_0 matmul: blocks of 32 as (f16 d, 32 × i8), x = d·q; 34 bytes.
// K must be a multiple of 32.
// #include "gguf_reads.wgsl"

@group(0) @binding(0) var<storage, read> w: array<u32>;   // raw blocks, row-major
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn i8x4(word: u32) -> vec4<f32> {
    let s = i32(word);
    return vec4<f32>(f32(extractBits(s, 0u, 8u)), f32(extractBits(s, 8u, 8u)),
                     f32(extractBits(s, 16u, 8u)), f32(extractBits(s, 24u, 8u)));
}

// Weights k = 8·k8 .. 8·k8 + 7 of row n.
fn dequant8(n: u32, k8: u32) -> array<vec4<f32>, 2> {
    let k = 8u * k8;
    let base = (n * (p.K / 32u) + k / 32u) * 34u;
    let d = half_at(base);
    let q = base + 2u + k % 32u;
    return array<vec4<f32>, 2>(d * i8x4(read_u32(q)), d * i8x4(read_u32(q + 4u)));
}

// A block in registers: its scale and its 32 bytes.
struct Chunk {
    d: f32,
    lo: vec4<u32>,
    hi: vec4<u32>,
}

// Block c of row n. The 34-byte block lies in words i .. i+8: d in the low half of word i
// and bytes from byte 2 when it starts a word, else d in the high half and bytes in words
// i+1 .. i+8.
fn load_chunk(n: u32, c: u32) -> Chunk {
    let base = (n * (p.K / 32u) + c) * 34u;
    let i = base / 4u;
    let w0 = vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
    let w1 = vec4<u32>(w[i + 4u], w[i + 5u], w[i + 6u], w[i + 7u]);
    let w2 = vec4<u32>(w0.yzw, w1.x);
    let w3 = vec4<u32>(w1.yzw, w[i + 8u]);
    let dh = unpack2x16float(w0.x);
    let odd = base % 4u != 0u;
    let s16 = vec4<u32>(16u);
    return Chunk(select(dh.x, dh.y, odd), select((w0 >> s16) | (w2 << s16), w2, odd), select((w1 >> s16) | (w3 << s16), w3, odd));
}

// Weights 8·s .. 8·s + 7 of the block: its words 2s, 2s + 1.
fn decode8(ch: Chunk, s: u32) -> array<vec4<f32>, 2> {
    let h = select(ch.lo, ch.hi, s >= 2u);
    let odd = (s & 1u) == 1u;
    return array<vec4<f32>, 2>(ch.d * i8x4(select(h.x, h.z, odd)), ch.d * i8x4(select(h.y, h.w, odd)));
}

// Σ weights of block b of row n × x, scaled once.
fn dot32(n: u32, b: u32, x: array<vec4<f32>, 8>) -> f32 {
    let ch = load_chunk(n, b);
    let lo = dot(i8x4(ch.lo.x), x[0]) + dot(i8x4(ch.lo.y), x[1]) + dot(i8x4(ch.lo.z), x[2]) + dot(i8x4(ch.lo.w), x[3]);
    let hi = dot(i8x4(ch.hi.x), x[4]) + dot(i8x4(ch.hi.y), x[5]) + dot(i8x4(ch.hi.z), x[6]) + dot(i8x4(ch.hi.w), x[7]);
    return ch.d * (lo + hi);
}
