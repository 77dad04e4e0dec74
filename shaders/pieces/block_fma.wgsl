// acc[t] += a[t]·b for the four rows t of a 4 × 4 block of outputs (column t of acc holds row
// t), as fused multiply-adds: the tiled kernels' inner step. Written as fma, not as a
// matrix's products then its sums, so that the sums do not depend on whether a driver fuses
// a SPIR-V multiply with the add that follows (half the instructions where it does not).
fn block_fma(acc: ptr<function, mat4x4<f32>>, a: vec4<f32>, b: vec4<f32>) {
    (*acc)[0] = fma(vec4<f32>(a.x), b, (*acc)[0]);
    (*acc)[1] = fma(vec4<f32>(a.y), b, (*acc)[1]);
    (*acc)[2] = fma(vec4<f32>(a.z), b, (*acc)[2]);
    (*acc)[3] = fma(vec4<f32>(a.w), b, (*acc)[3]);
}

// An invocation's place (x, y) in its workgroup's grid of `width` columns of blocks (its
// block: columns 4x.. and 4·width + 4x.. of rows 4y.. and 4·height + 4y..), from its flat
// index: each 32 consecutive invocations (a subgroup on NVIDIA, Apple and AMD's wave32) on
// 8 × 4 places, lane bits 0, 2 and 3 giving x and bits 1 and 4 giving y, so that lanes n and
// n ^ 1 read the same vec4 of A's tile and lanes n and n ^ 2 the same of B's. An NVIDIA GPU
// returns a subgroup's 128-bit read of workgroup memory in two passes where its lanes pair so,
// else in four (one per 8 lanes): in the row-major order (16 × 2 places where the grid is 16
// wide, 8 × 4 where it is 8) B's reads paired with nothing, and a step of the inner loop took
// 2 + 2 + 4 + 4 passes for its 64 multiply-adds, now 2 + 2 + 2 + 2. `row_major` keeps that
// order (a bench probe's, to compare). Needs width a multiple of 8 and 32 | the workgroup.
fn block_place(flat: u32, width: u32, row_major: bool) -> vec2<u32> {
    if (row_major) {
        return vec2<u32>(flat % width, flat / width);
    }
    let lane = flat % 32u;
    let group = flat / 32u;
    let groups_across = width / 8u;
    let x = (lane & 1u) | ((lane >> 1u) & 6u);
    let y = ((lane >> 1u) & 1u) | ((lane >> 3u) & 2u);
    return vec2<u32>(group % groups_across * 8u + x, group / groups_across * 4u + y);
}
