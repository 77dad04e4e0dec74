// The element type of matmul_tiled.wgsl's staged tiles: f32. core/build/ composes
// matmul_tiled_f16.wgsl with pieces/tile_f16.wgsl in this file's place.

alias TileElem = f32;

fn to_tile(v: f32) -> TileElem {
    return v;
}
