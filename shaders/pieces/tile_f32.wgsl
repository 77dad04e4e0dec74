// The element type of the staged tiles of matmul_tiled.wgsl and matmul/quant_tiled.wgsl:
// f32. core/build/ composes matmul_tiled_f16.wgsl and matmul_<format>_f16_tiles.wgsl with
// pieces/tile_f16.wgsl in this file's place.

alias TileElem = f32;

fn to_tile(v: f32) -> TileElem {
    return v;
}

// #include "row_scales_none.wgsl"
