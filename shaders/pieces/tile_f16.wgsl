// The tiles of matmul_tiled.wgsl and matmul/quant_tiled.wgsl in f16, for adapters with
// shader-f16 (core/build/ puts `enable f16;` at the top of matmul_tiled_f16.wgsl and
// matmul_<format>_f16_tiles.wgsl): half the workgroup memory, and half
// its traffic per reduction step. The products are still summed in f32. Values past f16's
// range saturate at ±65504 instead of becoming inf.

alias TileElem = f16;

const F16_MAX: f32 = 65504.0;

fn to_tile(v: f32) -> TileElem {
    return f16(clamp(v, -F16_MAX, F16_MAX));
}

// Four values as to_tile rounds each.
fn to_tile4(v: vec4<f32>) -> vec4<f16> {
    return vec4<f16>(clamp(v, vec4<f32>(-F16_MAX), vec4<f32>(F16_MAX)));
}

// #include "row_scales.wgsl"
