// The index of the largest of each row's N values, the first of them where several are (as
// the host's argmax: sampling.rs), written as an f32 (a token id as the lookups read it: exact
// below 2²⁴). Greedy decoding picks its next token with it on the GPU, so the host can record
// the token's launches before it has read the token (model/greedy.rs), and a batched decode
// reads a row's token instead of its logits. A workgroup per row: each invocation keeps the
// best of the values it strides over, then a tree takes the best of those.

struct Params {
    N: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

// whether (v, i) goes before (w, j): larger, or as large and earlier
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(256)
fn argmax(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.x * p.N;
    // an invocation past the end holds index N, which any value's index goes before
    var v = bitcast<f32>(0xff800000u); // -inf
    var i = p.N;
    if (lid < p.N) {
        v = x[row + lid];
        i = lid;
    }
    // its indices rise, so only a larger value replaces the one it holds
    for (var j = lid + WG; j < p.N; j += WG) {
        let w = x[row + j];
        if (w > v) {
            v = w;
            i = j;
        }
    }
    best_v[lid] = v;
    best_i[lid] = i;
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (lid < half && before(best_v[lid + half], best_i[lid + half], best_v[lid], best_i[lid])) {
            best_v[lid] = best_v[lid + half];
            best_i[lid] = best_i[lid + half];
        }
    }
    if (lid == 0u) {
        out[wid.x] = f32(best_i[0]);
    }
}
