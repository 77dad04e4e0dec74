// The matrix-vector kernels' sums over their workgroup (matmul_tiled.wgsl's and
// matmul/quant_tiled.wgsl's gemv kernels include this file): each invocation's first `parts`
// vec4s (1 to 3: the rows' products, up's where gated, the rows' sums of squares where
// normed) added over the workgroup, in workgroup memory, log2(GEMV_WG) halvings. core/build/
// composes the includers again with gemv_sum_subgroups.wgsl in this file's place
// (`_subgroups`), for adapters with subgroups. Every invocation calls gemv_sum in uniform
// control flow, `parts` the same for all, and gets the sums.

const GEMV_WG: u32 = 64u;

// The invocation's place in its workgroup.
struct GemvLane {
    @builtin(local_invocation_index) index: u32,
}

var<workgroup> gemv_parts: array<array<vec4<f32>, 3>, GEMV_WG>;

fn gemv_sum(lane: GemvLane, v: array<vec4<f32>, 3>, parts: u32) -> array<vec4<f32>, 3> {
    var own = v;
    for (var k = 0u; k < parts; k++) { gemv_parts[lane.index][k] = own[k]; }
    workgroupBarrier();
    for (var s = GEMV_WG / 2u; s > 0u; s >>= 1u) {
        if (lane.index < s) {
            for (var k = 0u; k < parts; k++) { gemv_parts[lane.index][k] += gemv_parts[lane.index + s][k]; }
        }
        workgroupBarrier();
    }
    return gemv_parts[0];
}
