// Workgroup reductions (rmsnorm, cross_entropy, grad_norm include this file). The includer
// defines `const WG: u32`, its workgroup size, a power of two; every invocation of the
// workgroup must call these in uniform control flow.

var<workgroup> partial: array<f32, WG>;

// Sum of `v` over the workgroup; every invocation gets the result.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { partial[lid] += partial[lid + s]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// Maximum of `v` over the workgroup; every invocation gets the result.
fn workgroup_max(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { partial[lid] = max(partial[lid], partial[lid + s]); }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
