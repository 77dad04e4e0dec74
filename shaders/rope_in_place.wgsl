// rope.wgsl's rotation in place: the queries and keys rotated where they lie (training's
// q and k, projected into the buffer attention reads), and their gradients rotated back
// where attention's backward wrote them (where its kernels could not); each invocation
// reads its pair before it writes it.

// #include "pieces/rope_rotate.wgsl"

@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> k: array<f32>;

fn load(on_k: bool, e: u32) -> f32 {
    if (on_k) { return k[e]; }
    return q[e];
}

fn store(on_k: bool, e: u32, v: f32) {
    if (on_k) { k[e] = v; } else { q[e] = v; }
}

@compute @workgroup_size(256)
fn rope_forward_in_place(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(gid.x + gid.y * nwg.x * 256u, 1.0);
}

@compute @workgroup_size(256)
fn rope_backward_in_place(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    rotate(gid.x + gid.y * nwg.x * 256u, -1.0);
}
