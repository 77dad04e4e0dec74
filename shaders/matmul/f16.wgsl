// f16 matmul: weights as IEEE half floats, two per u32 (element 2i in the low half).
// Unpacked with unpack2x16float, so it needs no shader-f16 feature.
// K must be a multiple of 8.

@group(0) @binding(0) var<storage, read> w: array<u32>;   // (N, K) halves, two per word
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Weights k = 8·k8 .. 8·k8 + 7 of row n: one chunk.
fn dequant8(n: u32, k8: u32) -> array<vec4<f32>, 2> {
    return decode8(load_chunk(n, k8), 0u);
}

// 8 weights of a row in registers: 4 words of halves.
struct Chunk {
    h: vec4<u32>,
}

// Weights 8·c .. 8·c + 7 of row n.
fn load_chunk(n: u32, c: u32) -> Chunk {
    let i = (n * p.K + 8u * c) / 2u;
    return Chunk(vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]));
}

// The chunk's weights (s is always 0: a chunk is one step).
fn decode8(ch: Chunk, s: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(vec4<f32>(unpack2x16float(ch.h.x), unpack2x16float(ch.h.y)),
                               vec4<f32>(unpack2x16float(ch.h.z), unpack2x16float(ch.h.w)));
}

// Σ weights 32·b .. 32·b + 31 of row n × x: four chunks.
fn dot32(n: u32, b: u32, x: array<vec4<f32>, 8>) -> f32 {
    let h0 = decode8(load_chunk(n, 4u * b), 0u); let h1 = decode8(load_chunk(n, 4u * b + 1u), 0u);
    let h2 = decode8(load_chunk(n, 4u * b + 2u), 0u); let h3 = decode8(load_chunk(n, 4u * b + 3u), 0u);
    return dot(h0[0], x[0]) + dot(h0[1], x[1]) + dot(h1[0], x[2]) + dot(h1[1], x[3])
         + dot(h2[0], x[4]) + dot(h2[1], x[5]) + dot(h3[0], x[6]) + dot(h3[1], x[7]);
}
