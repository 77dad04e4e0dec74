// Workgroup reductions (rmsnorm, cross_entropy, grad_norm include this file). The includer
// defines `const WG: u32`, its workgroup size, a power of two; its entry points take a
// `lane: Lane` and every invocation of the workgroup calls these in uniform control flow.
// core/build/ also composes each includer with reduce_subgroups.wgsl in this file's place
// (`<op>_subgroups.wgsl`), for adapters with subgroups: the same functions, the same Lane
// field `index`.

// The invocation's place in its workgroup.
struct Lane {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> partial: array<f32, WG>;

// Sum of `v` over the workgroup; every invocation gets the result.
fn workgroup_sum(lane: Lane, v: f32) -> f32 {
    partial[lane.index] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lane.index < s) { partial[lane.index] += partial[lane.index + s]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Maximum of `v` over the workgroup; every invocation gets the result.
fn workgroup_max(lane: Lane, v: f32) -> f32 {
    partial[lane.index] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lane.index < s) { partial[lane.index] = max(partial[lane.index], partial[lane.index + s]); }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
