// No input norm: what the matrix-vector kernels (matmul_tiled.wgsl, matmul/quant_tiled.wgsl)
// read when composed without one. core/build/ composes them again with
// pieces/input_norm.wgsl in this file's place.

const NORMED: bool = false;

fn norm_weight(r: u32) -> f32 {
    return 1.0;
}

fn norm_weight4(v: u32) -> vec4<f32> {
    return vec4<f32>(1.0);
}
