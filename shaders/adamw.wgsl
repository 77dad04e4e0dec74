// AdamW in place (PyTorch's torch.optim.AdamW, decoupled weight decay, bias correction):
//   g  = grad · clip[1]     (clip: the (norm, factor) pair grad_norm.wgsl writes)
//   p -= lr · wd · p
//   m  = β1·m + (1 − β1)·g;  v = β2·v + (1 − β2)·g²
//   p -= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps),   bci = 1 − βi^step

struct Params {
    N: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2: f32,
}

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read> clip: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(256)
fn adamw_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.N) { return; }
    let g = grad[i] * clip[1];
    var w = param[i] * (1.0 - p.lr * p.weight_decay);
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = w - (p.lr / p.bc1) * mi / (sqrt(vi) / sqrt(p.bc2) + p.eps);
}
