// Residual connection: out = a + b, element-wise over N values; and residual_accumulate,
// out = beta·out + x, which the matmuls use to add into an output. Its backward is the identity
// (the same gradient flows to both inputs), so it has no kernel of its own. bias_forward adds a
// (C) bias to every row of an (N/C, C) output (Qwen2's q/k/v projections).

struct Params {
    N: u32,
    beta: f32, // residual_accumulate only
    C: u32,    // bias_forward only
}

// residual_forward and residual_accumulate take a vec4 per invocation; past N (a length not a
// multiple of 4) they leave what is there.
@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> p: Params;

// Which lanes of vec4 i lie past N.
fn past_end(i: u32) -> vec4<bool> {
    return vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) >= vec4<u32>(p.N);
}

@compute @workgroup_size(256)
fn residual_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (4u * i >= p.N) { return; }
    var v = a[i] + b[i];
    if (4u * i + 4u > p.N) { v = select(v, out[i], past_end(i)); }
    out[i] = v;
}

@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> acc: array<vec4<f32>>;

@compute @workgroup_size(256)
fn residual_accumulate(@builtin(global_invocation_id) gid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (4u * i >= p.N) { return; }
    let old = acc[i];
    acc[i] = select(p.beta * old + x[i], old, past_end(i));
}

@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<storage, read_write> biased: array<f32>;

@compute @workgroup_size(256)
fn bias_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.N) { return; }
    biased[i] = biased[i] + bias[i % p.C];
}
