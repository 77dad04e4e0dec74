// GGUF Q4_1 matmul: blocks of 32 as (f16 d, f16 m, 16 bytes of nibbles in Q4_0's order),
// x = d·q + m; 20 bytes.
// K must be a multiple of 32.
// #include "gguf_reads.wgsl"
// #include "nibbles.wgsl"

@group(0) @binding(0) var<storage, read> w: array<u32>;   // raw blocks, row-major
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

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

// A block in registers: its scale, its minimum and its 16 bytes of nibbles.
struct Chunk {
    d: f32,
    m: f32,
    q: vec4<u32>,
}

// Block c of row n: the 20-byte block is words i .. i+4 (d, m in word i).
fn load_chunk(n: u32, c: u32) -> Chunk {
    let i = (n * (p.K / 32u) + c) * 5u;
    let dm = unpack2x16float(w[i]);
    return Chunk(dm.x, dm.y, vec4<u32>(w[i + 1u], w[i + 2u], w[i + 3u], w[i + 4u]));
}

// Weights 8·s .. 8·s + 7 of the block.
fn decode8(ch: Chunk, s: u32) -> array<vec4<f32>, 2> {
    let q = nib8(ch.q, s);
    return array<vec4<f32>, 2>(ch.d * q[0] + ch.m, ch.d * q[1] + ch.m);
}

// Σ weights of block b of row n × x, as d·Σ q·x + m·Σ x.
fn dot32(n: u32, b: u32, x: array<vec4<f32>, 8>) -> f32 {
    let ch = load_chunk(n, b);
    return ch.d * nib_dot(ch.q, x) + ch.m * sum32(x);
}
