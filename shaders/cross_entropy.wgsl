// Cross-entropy over the vocabulary for one chunk of R rows of logits (R, V), so that the
// launcher can walk B·T rows chunk by chunk and never hold all B·T·V logits.
// A target of IGNORE (0xFFFFFFFF) masks its row: loss 0 and gradient 0.
//   cross_entropy_forward:  losses[r] = logsumexp(logits[r]) − logits[r, target]
//   cross_entropy_backward: the same losses, and in the same pass
//                           dlogits = weights[r] · (softmax(logits) − onehot(target)),
//                           weights[r] = ∂loss/∂(row r's NLL): 1 / (counted tokens in the
//                           batch) for the mean NLL; per sequence for preference losses
// One workgroup of 256 per row. The two entry points bind different ranges (forward 0–2,
// backward 3–7): WGSL allows one variable per binding in a module.

struct Params {
    R: u32,
    V: u32,
}

const IGNORE: u32 = 0xFFFFFFFFu;
const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;
@group(0) @binding(3) var<storage, read> b_logits: array<f32>;
@group(0) @binding(4) var<storage, read> b_targets: array<u32>;
@group(0) @binding(5) var<storage, read> b_weights: array<f32>;
@group(0) @binding(6) var<storage, read_write> b_losses: array<f32>;
@group(0) @binding(7) var<storage, read_write> dlogits: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// #include "pieces/reduce.wgsl"

// (max, log Σ exp(x − max)) of one row. Twice, for the forward's and the backward's
// logits: a function that named both would bind both ranges in each entry point.
fn row_logsumexp(lane: Lane, base: u32) -> vec2<f32> {
    let lid = lane.index;
    var m = -3.0e38;
    for (var v = lid; v < p.V; v += WG) { m = max(m, logits[base + v]); }
    m = workgroup_max(lane, m);
    var s = 0.0;
    for (var v = lid; v < p.V; v += WG) { s += exp(logits[base + v] - m); }
    return vec2<f32>(m, log(workgroup_sum(lane, s)));
}

fn row_logsumexp_b(lane: Lane, base: u32) -> vec2<f32> {
    let lid = lane.index;
    var m = -3.0e38;
    for (var v = lid; v < p.V; v += WG) { m = max(m, b_logits[base + v]); }
    m = workgroup_max(lane, m);
    var s = 0.0;
    for (var v = lid; v < p.V; v += WG) { s += exp(b_logits[base + v] - m); }
    return vec2<f32>(m, log(workgroup_sum(lane, s)));
}

@compute @workgroup_size(256)
fn cross_entropy_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         lane: Lane) {
    let lid = lane.index;
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.R) { return; }
    let base = row * p.V;
    let lse = row_logsumexp(lane, base);
    let t = targets[row];
    if (lid == 0u) {
        losses[row] = select(lse.x + lse.y - logits[base + min(t, p.V - 1u)], 0.0, t == IGNORE);
    }
}

@compute @workgroup_size(256)
fn cross_entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          lane: Lane) {
    let lid = lane.index;
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.R) { return; }
    let base = row * p.V;
    let t = b_targets[row];
    if (t == IGNORE) {
        for (var v = lid; v < p.V; v += WG) { dlogits[base + v] = 0.0; }
        if (lid == 0u) { b_losses[row] = 0.0; }
        return;
    }
    let lse = row_logsumexp_b(lane, base);
    let shift = lse.x + lse.y;
    if (lid == 0u) { b_losses[row] = shift - b_logits[base + t]; }
    let w = b_weights[row];
    for (var v = lid; v < p.V; v += WG) {
        let prob = exp(b_logits[base + v] - shift);
        dlogits[base + v] = w * (prob - select(0.0, 1.0, v == t));
    }
}
