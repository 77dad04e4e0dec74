// sin and cos to f32 precision at any angle rope meets (rope.wgsl's header says why), for
// rope's kernels and attention's backward, which applies rope's backward as it stores. The
// includer's Params holds `zero` (always 0: see `kept`).

// π/2 as C1 + C2 + C3 + C4, the first three of at most 7 significant bits, so that k·Ci is
// exact for quadrant counts k below 2¹⁷ (angles up to 2·10⁵ radians) and each subtraction
// cancels exactly (Cody and Waite's reduction).
const C1: f32 = 1.578125;
const C2: f32 = -0.00732421875;
const C3: f32 = -4.4703483581542969e-06;
const C4: f32 = 1.5893254712295857e-08;

// v, where a compiler may not regroup the sums around it: llvmpipe turned
// ((x − k·C1) − k·C2) into x − k·(C1 + C2), losing the reduction's exactness (4e-3 at 10⁵
// radians). The zero comes from the parameters, so that it cannot be folded away.
fn kept(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ p.zero);
}

// (sin x, cos x): x reduced to r in [−π/4, π/4] by its quadrant k, then Cephes' minimax
// polynomials for sin and cos on that range (about 1 ulp).
fn sincos(x: f32) -> vec2<f32> {
    let k = round(x * 0.63661977236758134);
    let r = (kept(kept(x - k * C1) - k * C2) - k * C3) - k * C4;
    let z = r * r;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    // sin and cos of r + k·π/2
    switch (i32(k) & 3) {
        case 0: { return vec2<f32>(s, c); }
        case 1: { return vec2<f32>(c, -s); }
        case 2: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}
