// An invocation's place (x, y) in its workgroup's grid of `width` columns of blocks of outputs
// (matmul_tiled.wgsl's and quant_tiled.wgsl's: columns 4x.. and 4·width + 4x.. of rows 4y..
// and 4·height + 4y..; attention_flash.wgsl's: columns x + 16j of rows y + 16i), from its flat
// index. Each 32 consecutive invocations (a subgroup on NVIDIA, Apple and AMD's wave32) take
// 8 × 4 places, lane bits 0, 2 and 3 giving x and bits 1 and 4 giving y, so that lanes n and
// n ^ 1 read the same vector of the rows' operand in workgroup memory (indexed by y), and lanes
// n and n ^ 2 the same of the columns' (by x). An NVIDIA GPU returns a subgroup's 128-bit read
// of workgroup memory in two passes where its lanes pair so, else in four (one per 8 lanes).
// In row-major order (16 × 2 places where the grid is 16 wide, 8 × 4 where it is 8) the
// columns' reads paired with nothing: a step of the tiled matmuls' inner loop took 2 + 2 + 4 + 4
// passes for its 64 multiply-adds, now 2 + 2 + 2 + 2 (flash attention's products: 2 + 4 for
// 16, now 2 + 2). `row_major` keeps that order (a bench probe's, to compare). Needs a width
// that is a multiple of 8 and a workgroup of a multiple of 32 invocations.
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
