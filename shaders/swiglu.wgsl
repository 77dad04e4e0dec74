// SwiGLU: out = silu(gate) · up, element-wise over N values, silu(x) = x·σ(x).
//   swiglu_backward: dgate = dout·up·σ(g)·(1 + g·(1 − σ(g))),  dup = dout·silu(g)

struct Params {
    N: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read> bgate: array<f32>;
@group(0) @binding(5) var<storage, read> bup: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(7) var<storage, read_write> dup: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(256)
fn swiglu_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.N) { return; }
    let g = gate[i];
    out[i] = g * sigmoid(g) * up[i];
}

@compute @workgroup_size(256)
fn swiglu_backward(@builtin(global_invocation_id) gid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.N) { return; }
    let g = bgate[i];
    let s = sigmoid(g);
    let d = dout[i];
    dgate[i] = d * bup[i] * s * (1.0 + g * (1.0 - s));
    dup[i] = d * g * s;
}
