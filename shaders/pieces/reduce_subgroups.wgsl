// reduce.wgsl's workgroup reductions on subgroup operations (the `_subgroups` variants that
// core/build/ composes): each subgroup reduces in registers, one lane per subgroup leaves
// its result in workgroup memory, and every invocation combines those few partials in the
// same order, so all get the same value. One barrier pair instead of log2(WG) of them.
// Any subgroup size works (lavapipe's 8, SwiftShader's 4, 32 or 64 on GPUs).

struct Lane {
    @builtin(local_invocation_index) index: u32,
    @builtin(subgroup_id) subgroup: u32,
    @builtin(num_subgroups) subgroups: u32,
    @builtin(subgroup_invocation_id) in_subgroup: u32,
}

var<workgroup> partial: array<f32, WG>;

fn workgroup_sum(lane: Lane, v: f32) -> f32 {
    let s = subgroupAdd(v);
    if (lane.in_subgroup == 0u) { partial[lane.subgroup] = s; }
    workgroupBarrier();
    var total = partial[0];
    for (var i = 1u; i < lane.subgroups; i++) { total += partial[i]; }
    workgroupBarrier();
    return total;
}

fn workgroup_max(lane: Lane, v: f32) -> f32 {
    let s = subgroupMax(v);
    if (lane.in_subgroup == 0u) { partial[lane.subgroup] = s; }
    workgroupBarrier();
    var total = partial[0];
    for (var i = 1u; i < lane.subgroups; i++) { total = max(total, partial[i]); }
    workgroupBarrier();
    return total;
}
