// Dropout as LoRA applies it to a layer's input: out = beta·out + inp·keep/(1 − p), keep from
// pieces/dropout_mask.wgsl (the backward is the same op on the upstream gradient, same seed).
// On GPUs the LoRA products apply the mask themselves (matmul_tiled.wgsl), without this.

// Each invocation takes a vec4; past N (a length not a multiple of 4) it leaves what is there.

struct Params {
    N: u32,
    seed_hash: u32, // lowbias32(seed), from the host
    p: f32,
    beta: f32,
}

@group(0) @binding(0) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> p: Params;

// #include "pieces/dropout_mask.wgsl"

@compute @workgroup_size(256)
fn dropout_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (4u * i >= p.N) { return; }
    let idx = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u);
    var v = select(vec4<f32>(), inp[i] / (1.0 - p.p), dropout_keep(idx, p.seed_hash, p.p));
    let past_end = idx >= vec4<u32>(p.N);
    if (p.beta != 0.0 || any(past_end)) {
        let old = out[i];
        v = select(v + p.beta * old, old, past_end);
    }
    out[i] = v;
}
