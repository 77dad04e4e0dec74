// gemv_sum.wgsl's sums on subgroup operations (the `_subgroups` variants that core/build/
// composes): each subgroup adds its invocations' vec4s in registers, one lane per subgroup
// leaves them in workgroup memory, and every invocation adds those few in the same order,
// so all get the same sums. One barrier instead of log2(GEMV_WG) + 1; any subgroup size.

struct GemvLane {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) in_subgroup: u32,
}

var<workgroup> gemv_parts: array<vec4<f32>, GEMV_WG * 3u * GEMV_QUADS>;

fn gemv_sum(lane: GemvLane, v: ptr<function, GemvSums>, sets: u32) {
    let n = sets * GEMV_QUADS;
    for (var k = 0u; k < n; k++) { (*v)[k] = subgroupAdd((*v)[k]); }
    if (lane.in_subgroup == 0u) {
        for (var k = 0u; k < n; k++) { gemv_parts[lane.subgroup * n + k] = (*v)[k]; }
    }
    workgroupBarrier();
    for (var k = 0u; k < n; k++) {
        var total = gemv_parts[k];
        for (var i = 1u; i < lane.subgroups; i++) { total += gemv_parts[i * n + k]; }
        (*v)[k] = total;
    }
}
