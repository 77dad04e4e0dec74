enable f16;
enable wgpu_cooperative_matrix;

// matmul_tiled.wgsl's strided GEMM on cooperative matrices (pieces/coop_gemm.wgsl), for
// forwards and input gradients where the device has them:
//
//   c[z](M,N) = beta·c[z] + alpha · Σ_r A(i,r)·B(j,r)      (strides as matmul_tiled.wgsl's)
//
// A is staged row-major (M × K) and B column-major (K × N), r contiguous. An input
// gradient's A may lie in column blocks (a stacked weight's parts' gradients:
// pieces/column_blocks.wgsl). Split reductions and batches as in matmul_tiled.wgsl (the
// launcher shares them), and so is the low-rank term (LoRA's h·Bᵀ, or dh·A with its dropout
// mask) of the composition matmul_coop_low_rank.wgsl.

// #include "pieces/strided_gemm.wgsl"
// #include "pieces/gemm_output.wgsl"
// #include "pieces/column_blocks.wgsl"
// #include "pieces/coop_gemm.wgsl"

const DROP_TERM: u32 = 4u; // as matmul_tiled.wgsl's: the mask on the term's product alone

fn reduction_end(forward: bool) -> u32 { return p.R; }
fn out_cols(forward: bool) -> u32 { return p.N; }
fn term_masked() -> bool { return p.drop_on == DROP_TERM; }
fn a_offset(z: u32) -> u32 { return z * p.a_batch; }

// A(i, r), in blocks along r where a_block2 says so (an input gradient's).
fn a_value(a_off: u32, i: u32, r: u32) -> f32 {
    if (p.a_block2 != 0u) {
        return a[block_index(i, r, vec2<u32>(p.a_block2, p.a_block3), vec2<u32>(p.a_block2_at, p.a_block3_at), p.R)];
    }
    return a[a_off + i * p.a_si + r * p.a_sr];
}

// Both stages take their passes four at a time: every value of the four loaded first, each
// from a clamped index (0 where it lies outside the product), then each stored, zeroed where
// outside. A load under a branch waits for the branch, and the passes' loads would reach
// memory one round trip at a time (as matmul_tiled.wgsl's load_a).

// Where value t of pass e lies in the tile, (row or column, r): each pass four consecutive
// values along the operand's contiguous index (r where `along_r`, else the rows or columns),
// consecutive passes taking the next four.
fn quad_place(e: u32, t: u32, along_r: bool) -> vec2<u32> {
    let start = select(vec2<u32>(4u * (e % (TILE / 4u)), e / (TILE / 4u)), vec2<u32>(e / (BK / 4u), 4u * (e % (BK / 4u))), along_r);
    return start + t * select(vec2<u32>(1u, 0u), vec2<u32>(0u, 1u), along_r);
}

// Pass e's value t of A (0's index outside the product, or past the stage's `end` passes).
fn a_pass_value(a_off: u32, i0: u32, r0: u32, r_end: u32, end: u32, along_r: bool, e: u32, t: u32) -> f32 {
    let at = vec2<u32>(i0, r0) + quad_place(e, t, along_r);
    let idx = select(a_off + at.x * p.a_si + at.y * p.a_sr, block_index(at.x, at.y, vec2<u32>(p.a_block2, p.a_block3), vec2<u32>(p.a_block2_at, p.a_block3_at), p.R), p.a_block2 != 0u);
    return a[select(0u, idx, (e < end) & (at.x < p.M) & (at.y < r_end))];
}

// Pass e's four values of A.
fn a_pass(a_off: u32, i0: u32, r0: u32, r_end: u32, end: u32, along_r: bool, e: u32) -> vec4<f32> {
    return vec4<f32>(a_pass_value(a_off, i0, r0, r_end, end, along_r, e, 0u), a_pass_value(a_off, i0, r0, r_end, end, along_r, e, 1u),
                     a_pass_value(a_off, i0, r0, r_end, end, along_r, e, 2u), a_pass_value(a_off, i0, r0, r_end, end, along_r, e, 3u));
}

fn stage_a(forward: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32) {
    let along_r = p.a_sr == 1u;
    let end = TILE * BK / 4u;
    for (var e0 = flat; e0 < end; e0 += 4u * WG) {
        // (the four passes written out: see pieces/held_values.wgsl)
        let passes = mat4x4<f32>(a_pass(a_off, i0, r0, r_end, end, along_r, e0), a_pass(a_off, i0, r0, r_end, end, along_r, e0 + WG),
                                 a_pass(a_off, i0, r0, r_end, end, along_r, e0 + 2u * WG), a_pass(a_off, i0, r0, r_end, end, along_r, e0 + 3u * WG));
        put_passes(false, passes, e0, end, along_r, i0, r0, r_end);
    }
}

// The four passes from e0 (columns of `passes`) into tile_a, or tile_b where `on_b`: zero
// outside the product (rows or columns from i0, steps from r0), A's rows scaled.
fn put_passes(on_b: bool, passes: mat4x4<f32>, e0: u32, end: u32, along_r: bool, i0: u32, r0: u32, r_end: u32) {
    let lines = select(p.M, p.N, on_b);
    for (var n = 0u; n < 4u; n++) {
        if (e0 + n * WG < end) {
            let values = column_of(passes, n);
            for (var t = 0u; t < 4u; t++) {
                let place = quad_place(e0 + n * WG, t, along_r);
                let v = select(0.0, values[t], (i0 + place.x < lines) & (r0 + place.y < r_end));
                if (on_b) {
                    tile_b[place.x * LD + place.y] = to_tile(v);
                } else {
                    tile_a[place.x * LD + place.y] = to_tile(row_scaled(place.x, v));
                }
            }
        }
    }
}

// What pieces/row_scales.wgsl's scale_rows reads.
fn staged_rows() -> u32 { return TILE; }
fn staged_invocations() -> u32 { return WG; }
fn staged_along_r(term: bool) -> bool { return term || p.a_sr == 1u; }
fn staged_value(term: bool, a_off: u32, i: u32, r: u32) -> f32 {
    if (term) {
        return term_h_at(term_h_index(i, r));
    }
    return a_value(a_off, i, r);
}

// As stage_a: four consecutive values of `b` along r, or along the columns.
fn stage_b(forward: bool, z: u32, j0: u32, r0: u32, r_end: u32, flat: u32) {
    let b_off = z * p.b_batch;
    let along_r = p.b_sr == 1u;
    let end = TILE * BK / 4u;
    for (var e0 = flat; e0 < end; e0 += 4u * WG) {
        let passes = mat4x4<f32>(b_pass(b_off, j0, r0, r_end, end, along_r, e0), b_pass(b_off, j0, r0, r_end, end, along_r, e0 + WG),
                                 b_pass(b_off, j0, r0, r_end, end, along_r, e0 + 2u * WG), b_pass(b_off, j0, r0, r_end, end, along_r, e0 + 3u * WG));
        put_passes(true, passes, e0, end, along_r, j0, r0, r_end);
    }
}

// Pass e's value t of B, and its four values (as a_pass_value, a_pass).
fn b_pass_value(b_off: u32, j0: u32, r0: u32, r_end: u32, end: u32, along_r: bool, e: u32, t: u32) -> f32 {
    let at = vec2<u32>(j0, r0) + quad_place(e, t, along_r);
    return b[select(0u, b_off + at.x * p.b_sj + at.y * p.b_sr, (e < end) & (at.x < p.N) & (at.y < r_end))];
}

fn b_pass(b_off: u32, j0: u32, r0: u32, r_end: u32, end: u32, along_r: bool, e: u32) -> vec4<f32> {
    return vec4<f32>(b_pass_value(b_off, j0, r0, r_end, end, along_r, e, 0u), b_pass_value(b_off, j0, r0, r_end, end, along_r, e, 1u),
                     b_pass_value(b_off, j0, r0, r_end, end, along_r, e, 2u), b_pass_value(b_off, j0, r0, r_end, end, along_r, e, 3u));
}

fn out_index(forward: bool, z: u32, i: u32, j: u32) -> u32 { return z * p.c_batch + i * p.N + j; }
fn out_at(idx: u32) -> f32 { return c[idx]; }
fn set_out(idx: u32, v: f32) { c[idx] = v; }

@compute @workgroup_size(WG)
fn matmul_coop(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) flat: u32,
               @builtin(subgroup_id) sg: u32,
               @builtin(num_subgroups) subgroups: u32) {
    coop_gemm(wid, flat, sg, subgroups, true);
}
