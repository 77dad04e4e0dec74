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
