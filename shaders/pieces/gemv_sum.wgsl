// The matrix-vector kernels' sums over their workgroup (after pieces/gemv_rows.wgsl): each
// invocation's first `sets` sets of a GemvSums added over the workgroup, in workgroup memory,
// log2(GEMV_WG) halvings. core/build/ composes the includers again with
// gemv_sum_subgroups.wgsl in this file's place (`_subgroups`), for adapters with subgroups.
// Every invocation calls gemv_sum in uniform control flow, `sets` the same for all, and gets
// the sums in place.

// The invocation's place in its workgroup.
struct GemvLane {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> gemv_parts: array<vec4<f32>, GEMV_WG * 3u * GEMV_QUADS>;

fn gemv_sum(lane: GemvLane, v: ptr<function, GemvSums>, sets: u32) {
    let n = sets * GEMV_QUADS;
    for (var k = 0u; k < n; k++) { gemv_parts[lane.index * n + k] = (*v)[k]; }
    workgroupBarrier();
    for (var s = GEMV_WG / 2u; s > 0u; s >>= 1u) {
        if (lane.index < s) {
            for (var k = 0u; k < n; k++) { gemv_parts[lane.index * n + k] += gemv_parts[(lane.index + s) * n + k]; }
        }
        workgroupBarrier();
    }
    for (var k = 0u; k < n; k++) { (*v)[k] = gemv_parts[k]; }
}
