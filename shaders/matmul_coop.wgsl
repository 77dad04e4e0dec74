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

// An invocation's passes through a stage of TILE lines (A's rows, B's columns) by BK steps:
// each pass four consecutive values along the operand's contiguous index (r where `along_r`,
// else the lines), consecutive invocations taking consecutive passes, so that they read
// consecutive addresses: pass `flat` + k·WG of the stage's TILE · BK / 4 is the invocation's
// pass k, at its walk's (line, r) + k·(d_line, d_r). WG (32 or more, a power of two) is a
// multiple of the passes per line (BK / 4, or TILE / 4 across the lines), so a pass's place in
// the tile, and its address, advance by a constant, computed once per stage (the staging's
// index arithmetic was most of the loop: bench/amd_isa.sh).
struct CoopWalk {
    flat: u32,
    line: u32,
    r: u32,
    d_line: u32,
    d_r: u32,
    along_r: bool,
}

fn coop_walk(flat: u32, along_r: bool) -> CoopWalk {
    if (along_r) {
        return CoopWalk(flat, flat / (BK / 4u), 4u * (flat % (BK / 4u)), WG / (BK / 4u), 0u, true);
    }
    return CoopWalk(flat, 4u * (flat % (TILE / 4u)), flat / (TILE / 4u), 0u, WG / (TILE / 4u), false);
}

// (line, r) in the tile of value t of pass k.
fn walk_place(w: CoopWalk, k: u32, t: u32) -> vec2<u32> {
    return vec2<u32>(w.line + k * w.d_line + select(t, 0u, w.along_r), w.r + k * w.d_r + select(0u, t, w.along_r));
}

// A stage's passes, and each invocation's (4 or 8 for 128 invocations; fewer than 4, or none,
// in workgroups sized for wider subgroups), taken four at a time: every value of the four
// loaded first, each from a clamped index (0 where it lies outside the product; a pass past
// the stage's loads from a place inside A or B), then each stored where the pass is the
// stage's, zeroed where outside. A load under a branch waits for the branch, and the passes'
// loads would reach memory one round trip at a time (as matmul_tiled.wgsl's load_a).
// (functions of the overrides, which the pipeline's constants fold)
fn stage_passes() -> u32 { return TILE * BK / 4u; }
fn invocation_passes() -> u32 { return (stage_passes() + WG - 1u) / WG; }
// (the passes an invocation's loops take: whole fours)
fn taken_passes() -> u32 { return (invocation_passes() + 3u) / 4u * 4u; }

// Value t of pass k of A: at `at` + k·d_at + t·d_t, or where A is in `blocks` from
// block_index (`blocks` is a constant where gather_a is called: the plain walk computes no
// block index); 0's index outside the product.
fn a_pass_value(blocks: bool, w: CoopWalk, i0: u32, r0: u32, r_end: u32, at: u32, d_at: u32, d_t: u32, k: u32, t: u32) -> f32 {
    let e = vec2<u32>(i0, r0) + walk_place(w, k, t);
    let inside = (e.x < p.M) & (e.y < r_end);
    if (blocks) {
        return a[select(0u, block_index(e.x, e.y, vec2<u32>(p.a_block2, p.a_block3), vec2<u32>(p.a_block2_at, p.a_block3_at), p.R), inside)];
    }
    return a[select(0u, at + k * d_at + t * d_t, inside)];
}

fn a_pass(blocks: bool, w: CoopWalk, i0: u32, r0: u32, r_end: u32, at: u32, d_at: u32, d_t: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(a_pass_value(blocks, w, i0, r0, r_end, at, d_at, d_t, k, 0u), a_pass_value(blocks, w, i0, r0, r_end, at, d_at, d_t, k, 1u),
                     a_pass_value(blocks, w, i0, r0, r_end, at, d_at, d_t, k, 2u), a_pass_value(blocks, w, i0, r0, r_end, at, d_at, d_t, k, 3u));
}

fn stage_a(forward: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32) {
    // (decided once, not at each load)
    if (p.a_block2 != 0u) {
        gather_a(true, a_off, i0, r0, r_end, flat);
    } else {
        gather_a(false, a_off, i0, r0, r_end, flat);
    }
}

fn gather_a(blocks: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32) {
    let w = coop_walk(flat, p.a_sr == 1u);
    let at = a_off + (i0 + w.line) * p.a_si + (r0 + w.r) * p.a_sr;
    let d_at = w.d_line * p.a_si + w.d_r * p.a_sr;
    let d_t = select(p.a_si, p.a_sr, w.along_r);
    if (!blocks && d_t == 1u && stage_inside(i0, p.M, r0, r_end)) {
        stage_inside_passes(false, w, at, d_at);
        return;
    }
    for (var k = 0u; k < invocation_passes(); k += 4u) {
        // (the four passes written out: see pieces/held_values.wgsl)
        let passes = mat4x4<f32>(a_pass(blocks, w, i0, r0, r_end, at, d_at, d_t, k), a_pass(blocks, w, i0, r0, r_end, at, d_at, d_t, k + 1u),
                                 a_pass(blocks, w, i0, r0, r_end, at, d_at, d_t, k + 2u), a_pass(blocks, w, i0, r0, r_end, at, d_at, d_t, k + 3u));
        put_passes(false, passes, w, k, i0, r0, r_end);
    }
}

// The four passes from k (columns of `passes`) into tile_a, or tile_b where `on_b`: zero
// outside the product (rows or columns from i0, steps from r0), A's rows scaled.
fn put_passes(on_b: bool, passes: mat4x4<f32>, w: CoopWalk, k: u32, i0: u32, r0: u32, r_end: u32) {
    let lines = select(p.M, p.N, on_b);
    for (var n = 0u; n < 4u; n++) {
        // (a constant false where the passes taken cover the stage exactly: 128 invocations or fewer)
        if (taken_passes() * WG > stage_passes() && w.flat + (k + n) * WG >= stage_passes()) {
            break;
        }
        let values = column_of(passes, n);
        for (var t = 0u; t < 4u; t++) {
            let place = walk_place(w, k + n, t);
            let v = select(0.0, values[t], (i0 + place.x < lines) & (r0 + place.y < r_end));
            if (on_b) {
                tile_b[place.x * LD + place.y] = to_tile(v);
            } else {
                tile_a[place.x * LD + place.y] = to_tile(row_scaled(place.x, v));
            }
        }
    }
}

// Whether a stage (TILE lines from line0, BK steps from r0) lies wholly inside its operand,
// as every stage but those at the product's edges does.
fn stage_inside(line0: u32, lines: u32, r0: u32, r_end: u32) -> bool {
    return line0 + TILE <= lines && r0 + BK <= r_end;
}

// A stage inside its operand whose passes read four consecutive values (at + k·d_at + t, a
// unit stride along the walk), into tile_a, or tile_b where `on_b`: no bounds to test per
// value, and the walk's direction a constant in each copy, so that a value costs about a
// dozen instructions where the edges' cost some thirty (bench/amd_isa.sh). A pass past the
// stage (in workgroups sized for wider subgroups) reads past it, harmlessly, and stores
// nothing.
fn stage_inside_passes(on_b: bool, w: CoopWalk, at: u32, d_at: u32) {
    if (w.along_r) {
        stage_inside_walk(on_b, true, w, at, d_at);
    } else {
        stage_inside_walk(on_b, false, w, at, d_at);
    }
}

// stage_inside_passes along r, or across the lines (`along_r` a constant where called).
fn stage_inside_walk(on_b: bool, along_r: bool, w: CoopWalk, at: u32, d_at: u32) {
    for (var k = 0u; k < invocation_passes(); k += 4u) {
        // (the four passes written out: see pieces/held_values.wgsl)
        let passes = mat4x4<f32>(run_of_four(on_b, at + k * d_at), run_of_four(on_b, at + (k + 1u) * d_at),
                                 run_of_four(on_b, at + (k + 2u) * d_at), run_of_four(on_b, at + (k + 3u) * d_at));
        for (var n = 0u; n < 4u; n++) {
            // (a constant false where the passes taken cover the stage exactly: 128 invocations or fewer)
            if (taken_passes() * WG > stage_passes() && w.flat + (k + n) * WG >= stage_passes()) {
                break;
            }
            let values = column_of(passes, n);
            let first = vec2<u32>(w.line + (k + n) * w.d_line, w.r + (k + n) * w.d_r);
            for (var t = 0u; t < 4u; t++) {
                let place = first + select(vec2<u32>(t, 0u), vec2<u32>(0u, t), along_r);
                if (on_b) {
                    tile_b[place.x * LD + place.y] = to_tile(values[t]);
                } else {
                    tile_a[place.x * LD + place.y] = to_tile(row_scaled(place.x, values[t]));
                }
            }
        }
    }
}

// The four values of A, or of B where `on_b`, from index `at`.
fn run_of_four(on_b: bool, at: u32) -> vec4<f32> {
    if (on_b) {
        return vec4<f32>(b[at], b[at + 1u], b[at + 2u], b[at + 3u]);
    }
    return vec4<f32>(a[at], a[at + 1u], a[at + 2u], a[at + 3u]);
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

// As gather_a: B's passes (its columns from j0, steps from r0).
fn stage_b(forward: bool, z: u32, j0: u32, r0: u32, r_end: u32, flat: u32) {
    let w = coop_walk(flat, p.b_sr == 1u);
    let at = z * p.b_batch + (j0 + w.line) * p.b_sj + (r0 + w.r) * p.b_sr;
    let d_at = w.d_line * p.b_sj + w.d_r * p.b_sr;
    let d_t = select(p.b_sj, p.b_sr, w.along_r);
    if (d_t == 1u && stage_inside(j0, p.N, r0, r_end)) {
        stage_inside_passes(true, w, at, d_at);
        return;
    }
    for (var k = 0u; k < invocation_passes(); k += 4u) {
        let passes = mat4x4<f32>(b_pass(w, j0, r0, r_end, at, d_at, d_t, k), b_pass(w, j0, r0, r_end, at, d_at, d_t, k + 1u),
                                 b_pass(w, j0, r0, r_end, at, d_at, d_t, k + 2u), b_pass(w, j0, r0, r_end, at, d_at, d_t, k + 3u));
        put_passes(true, passes, w, k, j0, r0, r_end);
    }
}

// Value t of pass k of B, and its four values (as a_pass_value, a_pass).
fn b_pass_value(w: CoopWalk, j0: u32, r0: u32, r_end: u32, at: u32, d_at: u32, d_t: u32, k: u32, t: u32) -> f32 {
    let e = vec2<u32>(j0, r0) + walk_place(w, k, t);
    return b[select(0u, at + k * d_at + t * d_t, (e.x < p.N) & (e.y < r_end))];
}

fn b_pass(w: CoopWalk, j0: u32, r0: u32, r_end: u32, at: u32, d_at: u32, d_t: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(b_pass_value(w, j0, r0, r_end, at, d_at, d_t, k, 0u), b_pass_value(w, j0, r0, r_end, at, d_at, d_t, k, 1u),
                     b_pass_value(w, j0, r0, r_end, at, d_at, d_t, k, 2u), b_pass_value(w, j0, r0, r_end, at, d_at, d_t, k, 3u));
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
