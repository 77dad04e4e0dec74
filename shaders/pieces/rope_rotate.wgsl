// Rope's rotation (rope.wgsl's header says what it computes), shared by rope.wgsl and
// rope_in_place.wgsl: its Params, the positions and frequencies it reads, and `rotate`, which
// reads and writes the queries and keys through the includer's `load` and `store`. Its sin
// and cos: sincos.wgsl, which attention.wgsl's backward also includes.

struct Params {
    N: u32,
    H: u32,
    HK: u32,
    HS: u32,
    rot: u32,
    mscale: f32,
    zero: u32, // 0: see `kept`
}

@group(0) @binding(0) var<storage, read> pos: array<u32>;
@group(0) @binding(1) var<storage, read> freqs: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// #include "sincos.wgsl"

// Invocations 0 .. N·H·HS/2 rotate the queries, the next N·HK·HS/2 the keys: invocation i of
// a tensor handles pair j = i mod HS/2 of its head i / (HS/2), a rotated pair (j, j + R/2)
// when j < R/2, else two passed-through dims.
fn rotate(flat: u32, sign: f32) {
    let half = p.HS / 2u;
    let q_pairs = p.N * p.H * half;
    let on_k = flat >= q_pairs;
    let i = select(flat, flat - q_pairs, on_k);
    let heads = select(p.H, p.HK, on_k);
    if (i >= p.N * heads * half) { return; }
    let j = i % half;
    let head = i / half;          // n·heads + h
    let n = head / heads;
    let base = head * p.HS;
    let rh = p.rot / 2u;
    if (j >= rh) {
        let e = base + p.rot + 2u * (j - rh);
        store(on_k, e, load(on_k, e));
        store(on_k, e + 1u, load(on_k, e + 1u));
        return;
    }
    let sc = sincos(f32(pos[n]) * freqs[j]);
    let c = p.mscale * sc.y;
    let s = p.mscale * sign * sc.x;
    let x1 = load(on_k, base + j);
    let x2 = load(on_k, base + j + rh);
    store(on_k, base + j, x1 * c - x2 * s);
    store(on_k, base + j + rh, x2 * c + x1 * s);
}
