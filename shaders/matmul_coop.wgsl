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
// else the lines), taken four passes at a time (a quad). Along r, pass `flat` + k·WG of the
// stage's TILE · BK / 4 is the invocation's pass k, at its walk's (line + k·d_line, r), and
// consecutive invocations take consecutive passes of a line, so that they read consecutive
// addresses; a pass is four consecutive steps of its line in the tile, one store. Across the
// lines (an input gradient's B: W read down its columns), quad `flat` + q·WG of the stage's
// TILE / 4 × BK / 4 is the invocation's quad q, four lines by four steps at
// (line + q·d_line, r): its pass k = 4q + n reads the four lines at step r + n, and the quad's
// values, transposed, are four lines' four consecutive steps, four stores (put_quad).
// Consecutive invocations take consecutive quads of steps of the same four lines: the
// subgroup's loads read 64 bytes of each of eight rows of W (16 of each of 32 before), and
// the stores of eight invocations fill 64 bytes of a line. WG (32 or more, a power of two) is
// a multiple of BK / 4, so that a pass's place in the tile, and its address, advance by
// constants, computed once per stage (the staging's index arithmetic was most of the loop:
// bench/amd_isa.sh).
struct CoopWalk {
    flat: u32,
    line: u32,
    r: u32,
    // lines from a pass to the next (along r), or from a quad to the next (across)
    d_line: u32,
    along_r: bool,
}

fn coop_walk(flat: u32, along_r: bool) -> CoopWalk {
    let line = flat / (BK / 4u);
    let r = 4u * (flat % (BK / 4u));
    if (along_r) {
        return CoopWalk(flat, line, r, WG / (BK / 4u), true);
    }
    return CoopWalk(flat, 4u * line, r, 4u * (WG / (BK / 4u)), false);
}

// (line, r) in the tile of value t of pass k.
fn walk_place(w: CoopWalk, k: u32, t: u32) -> vec2<u32> {
    if (w.along_r) {
        return vec2<u32>(w.line + k * w.d_line, w.r + t);
    }
    return vec2<u32>(w.line + (k / 4u) * w.d_line + t, w.r + k % 4u);
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

// An operand as stage reads it: its value (line, r) at base + line·s_line + r·s_r, for
// `lines` lines (A's rows, M; B's columns, N).
struct Operand {
    base: u32,
    s_line: u32,
    s_r: u32,
    lines: u32,
}

fn stage_a(forward: bool, a_off: u32, i0: u32, r0: u32, r_end: u32, flat: u32) {
    let o = Operand(a_off, p.a_si, p.a_sr, p.M);
    // (decided once, not at each load)
    if (p.a_block2 != 0u) {
        stage(false, true, o, i0, r0, r_end, flat);
    } else {
        stage(false, false, o, i0, r0, r_end, flat);
    }
}

fn stage_b(forward: bool, z: u32, j0: u32, r0: u32, r_end: u32, flat: u32) {
    stage(true, false, Operand(z * p.b_batch, p.b_sj, p.b_sr, p.N), j0, r0, r_end, flat);
}

// The stage of A (rows from line0), or of B where `on_b` (columns from line0), steps r0..r_end,
// into its tile; A in column blocks where `blocks` (`on_b` and `blocks` are constants where
// stage is called). A stage that lies wholly inside its operand, as every stage but those at
// the product's edges does, and whose passes read four consecutive values, is staged without
// bounds (`bounded` false) and in a direction fixed in each of two copies, so that a value
// costs about a dozen instructions where the edges' cost some thirty (bench/amd_isa.sh).
fn stage(on_b: bool, blocks: bool, o: Operand, line0: u32, r0: u32, r_end: u32, flat: u32) {
    if (PREFETCH) {
        stage_ahead(on_b, blocks, o, line0, r0, r_end, flat);
        return;
    }
    let along_r = o.s_r == 1u;
    if (stage_inside(blocks, o, line0, r0, r_end)) {
        if (along_r) {
            stage_walk(on_b, false, false, o, coop_walk(flat, true), line0, r0, r_end);
        } else {
            stage_walk(on_b, false, false, o, coop_walk(flat, false), line0, r0, r_end);
        }
        return;
    }
    stage_walk(on_b, true, blocks, o, coop_walk(flat, along_r), line0, r0, r_end);
}

// Whether a stage of `o` from (line0, r0) is staged without bounds: inside the operand, its
// passes four consecutive values, not in blocks.
fn stage_inside(blocks: bool, o: Operand, line0: u32, r0: u32, r_end: u32) -> bool {
    let along_r = o.s_r == 1u;
    return !blocks && line0 + TILE <= o.lines && r0 + BK <= r_end && select(o.s_line, o.s_r, along_r) == 1u;
}

// stage's passes along the walk `w` (`bounded`, `blocks` and, where not bounded, w's
// direction constants in each copy).
fn stage_walk(on_b: bool, bounded: bool, blocks: bool, o: Operand, w: CoopWalk, line0: u32, r0: u32, r_end: u32) {
    let s = pass_start(o, w, line0, r0, r_end);
    for (var k = 0u; k < invocation_passes(); k += 4u) {
        // (the four passes written out: see pieces/held_values.wgsl)
        let passes = mat4x4<f32>(pass_of(on_b, bounded, blocks, w, s, k), pass_of(on_b, bounded, blocks, w, s, k + 1u),
                                 pass_of(on_b, bounded, blocks, w, s, k + 2u), pass_of(on_b, bounded, blocks, w, s, k + 3u));
        put_passes(on_b, bounded, w, s, k, passes);
    }
}

// Passes k .. k + 3 (k a multiple of 4) into the tile: each along r (none past the stage),
// or the quad across the lines.
fn put_passes(on_b: bool, bounded: bool, w: CoopWalk, s: PassStart, k: u32, passes: mat4x4<f32>) {
    if (!w.along_r) {
        if (!past_stage(w, k)) {
            put_quad(on_b, bounded, w, s, k, transpose(passes));
        }
        return;
    }
    for (var n = 0u; n < 4u; n++) {
        if (past_stage(w, k + n)) {
            break;
        }
        put_pass(on_b, bounded, w, s, k + n, column_of(passes, n));
    }
}

// Whether pass k of the walk lies past the stage (a constant false where the passes taken
// cover the stage exactly: 128 invocations or fewer): across the lines, its quad.
fn past_stage(w: CoopWalk, k: u32) -> bool {
    let index = select(4u * (w.flat + (k / 4u) * WG), w.flat + k * WG, w.along_r);
    return taken_passes() * WG > stage_passes() && index >= stage_passes();
}

// Pass k's four values along r, four consecutive steps of a line, into the tile in one store
// (zero outside the product where `bounded`; A's rows scaled).
fn put_pass(on_b: bool, bounded: bool, w: CoopWalk, s: PassStart, k: u32, values: vec4<f32>) {
    put_steps(on_b, bounded, s, walk_place(w, k, 0u), values);
}

// The quad of passes k .. k + 3 across the lines, transposed (`lines`: line t's four steps
// in column t), into the tile in four stores.
fn put_quad(on_b: bool, bounded: bool, w: CoopWalk, s: PassStart, k: u32, lines: mat4x4<f32>) {
    for (var t = 0u; t < 4u; t++) {
        put_steps(on_b, bounded, s, walk_place(w, k, t), column_of(lines, t));
    }
}

// Four consecutive steps of a line from `place` (its step a multiple of 4), zero outside the
// product where `bounded`, A's row scaled.
fn put_steps(on_b: bool, bounded: bool, s: PassStart, place: vec2<u32>, values: vec4<f32>) {
    let steps = vec4<u32>(s.r0 + place.y) + vec4<u32>(0u, 1u, 2u, 3u);
    let inside = vec4<bool>(!bounded | (s.line0 + place.x < s.lines)) & (vec4<bool>(!bounded) | (steps < vec4<u32>(s.r_end)));
    var v = select(vec4<f32>(), values, inside);
    if (!on_b) {
        v *= row_scaled(place.x, 1.0);
    }
    put_tile4(on_b, place.x * LD + place.y, to_tile4(v));
}

// Loaded a stage ahead (PREFETCH, the launcher's variants "a stage ahead": tiles of 64, at
// most 8 passes an invocation): each stage puts into its tile the values loaded during the
// previous stage, then loads the next stage's, whose loads stay in flight through the barrier
// and this stage's products; only a walk's first stage waits for its loads. The same values
// in the same places as staged in turn. An invocation holds up to 8 passes of each operand
// (32 values): `lo` passes 0 to 3, `hi` 4 to 7. A stage's values are the workgroup's whatever
// the turn of blocks, so a walk may begin with the stage the last one held.
struct Held {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
}

const NONE: u32 = 0xffffffffu;
var<private> held_a: Held;
var<private> held_b: Held;
// the stage (r0) that held_a and held_b hold
var<private> held_at: vec2<u32> = vec2<u32>(NONE, NONE);

fn stage_ahead(on_b: bool, blocks: bool, o: Operand, line0: u32, r0: u32, r_end: u32, flat: u32) {
    var held = held_a;
    if (on_b) {
        held = held_b;
    }
    // (the first stage of a walk over the reduction: nothing loaded ahead)
    if (select(held_at.x, held_at.y, on_b) != r0) {
        held = load_ahead(on_b, blocks, o, line0, r0, r_end, flat);
    }
    put_ahead(on_b, blocks, o, line0, r0, r_end, flat, held);
    if (r0 + BK < r_end) {
        let next = load_ahead(on_b, blocks, o, line0, r0 + BK, r_end, flat);
        if (on_b) {
            held_b = next;
            held_at.y = r0 + BK;
        } else {
            held_a = next;
            held_at.x = r0 + BK;
        }
    }
}

// A stage's passes, along the walk stage would take (its copies' constants as there).
fn load_ahead(on_b: bool, blocks: bool, o: Operand, line0: u32, r0: u32, r_end: u32, flat: u32) -> Held {
    let along_r = o.s_r == 1u;
    if (stage_inside(blocks, o, line0, r0, r_end)) {
        if (along_r) {
            return gather(on_b, false, false, o, coop_walk(flat, true), line0, r0, r_end);
        }
        return gather(on_b, false, false, o, coop_walk(flat, false), line0, r0, r_end);
    }
    return gather(on_b, true, blocks, o, coop_walk(flat, along_r), line0, r0, r_end);
}

fn gather(on_b: bool, bounded: bool, blocks: bool, o: Operand, w: CoopWalk, line0: u32, r0: u32, r_end: u32) -> Held {
    let s = pass_start(o, w, line0, r0, r_end);
    var h: Held;
    h.lo = mat4x4<f32>(pass_of(on_b, bounded, blocks, w, s, 0u), pass_of(on_b, bounded, blocks, w, s, 1u),
                       pass_of(on_b, bounded, blocks, w, s, 2u), pass_of(on_b, bounded, blocks, w, s, 3u));
    if (taken_passes() > 4u) {
        h.hi = mat4x4<f32>(pass_of(on_b, bounded, blocks, w, s, 4u), pass_of(on_b, bounded, blocks, w, s, 5u),
                           pass_of(on_b, bounded, blocks, w, s, 6u), pass_of(on_b, bounded, blocks, w, s, 7u));
    }
    return h;
}

// `held`'s passes into the stage's tile, along the walk load_ahead took.
fn put_ahead(on_b: bool, blocks: bool, o: Operand, line0: u32, r0: u32, r_end: u32, flat: u32, held: Held) {
    let along_r = o.s_r == 1u;
    if (stage_inside(blocks, o, line0, r0, r_end)) {
        if (along_r) {
            put_held(on_b, false, o, coop_walk(flat, true), line0, r0, r_end, held);
        } else {
            put_held(on_b, false, o, coop_walk(flat, false), line0, r0, r_end, held);
        }
        return;
    }
    put_held(on_b, true, o, coop_walk(flat, along_r), line0, r0, r_end, held);
}

fn put_held(on_b: bool, bounded: bool, o: Operand, w: CoopWalk, line0: u32, r0: u32, r_end: u32, held: Held) {
    let s = pass_start(o, w, line0, r0, r_end);
    put_passes(on_b, bounded, w, s, 0u, held.lo);
    if (taken_passes() > 4u) {
        put_passes(on_b, bounded, w, s, 4u, held.hi);
    }
}

// Where a walk's passes start: value t of pass k at pass_at(k) + t·d_t (d_t is 1 where the
// stage is not bounded), its tile's first line and step, and the bounds.
struct PassStart {
    at: u32,
    // from a pass to the next along r; from a quad to the next, and a pass to the next in a
    // quad, across the lines
    d_at: u32,
    d_in_quad: u32,
    d_t: u32,
    along_r: bool,
    line0: u32,
    r0: u32,
    r_end: u32,
    lines: u32,
}

fn pass_start(o: Operand, w: CoopWalk, line0: u32, r0: u32, r_end: u32) -> PassStart {
    let at = o.base + (line0 + w.line) * o.s_line + (r0 + w.r) * o.s_r;
    return PassStart(at, w.d_line * o.s_line, o.s_r, select(o.s_line, o.s_r, w.along_r), w.along_r, line0, r0, r_end, o.lines);
}

// Where pass k's first value lies.
fn pass_at(s: PassStart, k: u32) -> u32 {
    if (s.along_r) {
        return s.at + k * s.d_at;
    }
    return s.at + (k / 4u) * s.d_at + (k % 4u) * s.d_in_quad;
}

// Pass k's four values (A's, or B's where `on_b`), loaded from 0's index outside the product
// (tested only where `bounded`), or where A is in `blocks` from block_index (the plain walk
// computes no block index). Not bounded, a pass past the stage (in workgroups sized for wider
// subgroups) reads past it, harmlessly (wgpu's or the driver's bounds checks keep a read
// inside its buffer), and stores nothing.
fn pass_of(on_b: bool, bounded: bool, blocks: bool, w: CoopWalk, s: PassStart, k: u32) -> vec4<f32> {
    if (!bounded) {
        let at = pass_at(s, k);
        return vec4<f32>(operand_at(on_b, at), operand_at(on_b, at + 1u), operand_at(on_b, at + 2u), operand_at(on_b, at + 3u));
    }
    return vec4<f32>(pass_value(on_b, blocks, w, s, k, 0u), pass_value(on_b, blocks, w, s, k, 1u),
                     pass_value(on_b, blocks, w, s, k, 2u), pass_value(on_b, blocks, w, s, k, 3u));
}

fn pass_value(on_b: bool, blocks: bool, w: CoopWalk, s: PassStart, k: u32, t: u32) -> f32 {
    let place = walk_place(w, k, t);
    let inside = in_product(s, place);
    if (blocks) {
        let e = vec2<u32>(s.line0, s.r0) + place;
        return a[select(0u, block_index(e.x, e.y, vec2<u32>(p.a_block2, p.a_block3), vec2<u32>(p.a_block2_at, p.a_block3_at), p.R), inside)];
    }
    return operand_at(on_b, select(0u, pass_at(s, k) + t * s.d_t, inside));
}

// Whether the value at `place` in the tile lies inside the product (its operand's lines and
// the stage's steps): where a pass loads it from, and where it is stored as it is, not zeroed.
fn in_product(s: PassStart, place: vec2<u32>) -> bool {
    return (s.line0 + place.x < s.lines) & (s.r0 + place.y < s.r_end);
}

// a[idx], or b[idx] where `on_b`.
fn operand_at(on_b: bool, idx: u32) -> f32 {
    if (on_b) {
        return b[idx];
    }
    return a[idx];
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
