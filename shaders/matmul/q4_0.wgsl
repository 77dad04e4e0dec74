// GGUF Q4_0 matmul: blocks of 32 as (f16 d, 16 bytes: element j in the low nibble of
// byte j, element j + 16 in its high nibble), x = d·(q − 8); 18 bytes.
// K must be a multiple of 32.
// #include "gguf_reads.wgsl"
// #include "nibbles.wgsl"

@group(0) @binding(0) var<storage, read> w: array<u32>;   // raw blocks, row-major
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Weights k = 8·k8 .. 8·k8 + 7 of row n.
fn dequant8(n: u32, k8: u32) -> array<vec4<f32>, 2> {
    let k = 8u * k8;
    let base = (n * (p.K / 32u) + k / 32u) * 18u;
    let d = half_at(base);
    let o = k % 32u;
    let q = base + 2u + o % 16u;
    let shift = select(0u, 4u, o >= 16u);
    return array<vec4<f32>, 2>(d * (nib4(read_u32(q), shift) - 8.0), d * (nib4(read_u32(q + 4u), shift) - 8.0));
}

// A block in registers: its scale and its 16 bytes of nibbles.
struct Chunk {
    d: f32,
    q: vec4<u32>,
}

// Block c of row n. The 18-byte block lies in words i .. i+4: d in the low half of word i
// and nibbles from byte 2 when it starts a word, else d in the high half and nibbles in
// words i+1 .. i+4.
fn load_chunk(n: u32, c: u32) -> Chunk {
    let base = (n * (p.K / 32u) + c) * 18u;
    let i = base / 4u;
    let lo = vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
    let hi = vec4<u32>(lo.yzw, w[i + 4u]);
    let dh = unpack2x16float(lo.x);
    let odd = base % 4u != 0u;
    return Chunk(select(dh.x, dh.y, odd), select((lo >> vec4<u32>(16u)) | (hi << vec4<u32>(16u)), hi, odd));
}

// Weights 8·s .. 8·s + 7 of the block.
fn decode8(ch: Chunk, s: u32) -> array<vec4<f32>, 2> {
    let q = nib8(ch.q, s);
    return array<vec4<f32>, 2>(ch.d * (q[0] - 8.0), ch.d * (q[1] - 8.0));
}

// Σ weights of block b of row n × x, as d·(Σ q·x − 8·Σ x).
fn dot32(n: u32, b: u32, x: array<vec4<f32>, 8>) -> f32 {
    let ch = load_chunk(n, b);
    return ch.d * (nib_dot(ch.q, x) - 8.0 * sum32(x));
}
