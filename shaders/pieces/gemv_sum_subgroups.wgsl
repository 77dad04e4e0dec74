// gemv_sum.wgsl's sums on subgroup operations (the `_subgroups` variants that core/build/
// composes): each subgroup adds its invocations' vec4s in registers, one lane per subgroup
// leaves them in workgroup memory, and every invocation adds those few in the same order,
// so all get the same sums. One barrier instead of log2(GEMV_WG) + 1; any subgroup size.

const GEMV_WG: u32 = 64u;

struct GemvLane {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) in_subgroup: u32,
}

var<workgroup> gemv_parts: array<array<vec4<f32>, 3>, GEMV_WG>;

fn gemv_sum(lane: GemvLane, v: array<vec4<f32>, 3>, parts: u32) -> array<vec4<f32>, 3> {
    var own = v;
    own[0] = subgroupAdd(v[0]);
    if (parts > 1u) { own[1] = subgroupAdd(v[1]); }
    if (parts > 2u) { own[2] = subgroupAdd(v[2]); }
    if (lane.in_subgroup == 0u) { gemv_parts[lane.subgroup] = own; }
    workgroupBarrier();
    var total = gemv_parts[0];
    for (var i = 1u; i < lane.subgroups; i++) {
        for (var k = 0u; k < parts; k++) { total[k] += gemv_parts[i][k]; }
    }
    return total;
}
