// Token embedding lookup: out(N, C) = wte[tokens[n]] for N = B·T tokens.

struct Params {
    N: u32,
    C: u32,
    V: u32,
}

@group(0) @binding(0) var<storage, read> tokens: array<u32>;
@group(0) @binding(1) var<storage, read> wte: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(256)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.N * p.C) { return; }
    let n = i / p.C;
    let c = i % p.C;
    let tok = min(tokens[n], p.V - 1u); // ids are checked on the host; never read out of bounds
    out[i] = wte[tok * p.C + c];
}
