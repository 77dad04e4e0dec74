enable f16;
enable wgpu_cooperative_matrix;

// The GPU's rate on cooperative matrices with no memory traffic (`hearth bench ops`' "peak
// coop" row), as fma_peak.wgsl's is for f32: what the cooperative-matrix matmuls' GFLOP/s are
// read against on the machine itself, through this driver's and wgpu's path, not a data
// sheet's. A workgroup is sized as pieces/coop_gemm.wgsl's (WG: one subgroup of the size the
// launcher expects per block, G² blocks) and does the same work whatever its subgroups' size:
// subgroup s takes blocks s, s + S, ... (all of them, several times over, where subgroups are
// narrower than expected; each block's result is the same). A block loads two A and four B
// matrices once from workgroup memory, then runs `iters` rounds of its 8 independent products
// c(a, b) ← A_a·B_b + c(a, b), and stores the 8: 8 · 2 · D³ FLOPs a round. The matrices hold
// small multiples of 1/64 (exact in f16, their products and sums exact in f32 for fewer
// than 16,384 rounds), so c(a, b) is exactly iters · A_a·B_b (ops::cpu's fma_peak_coop).

// #include "pieces/coop_16x16.wgsl"

struct Params {
    iters: u32,
}

override WG: u32 = 128u;
// blocks per workgroup, as pieces/coop_gemm.wgsl's tiles have
const G: u32 = 32u / D;
const BLOCKS: u32 = G * G;
const MATRICES: u32 = 6u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

// the six D × D matrices, row-major: A_0, A_1, B_0, ..., B_3
var<workgroup> frags: array<f16, MATRICES * D * D>;

// Element e of the matrices of workgroup w (see ops::cpu's fma_peak_coop).
fn peak_value(e: u32, w: u32) -> f16 {
    return f16(f32(i32((e * 7u + w) % 16u) - 8) / 64.0);
}

@compute @workgroup_size(WG)
fn fma_peak_coop(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) flat: u32,
                 @builtin(subgroup_id) sg: u32,
                 @builtin(num_subgroups) subgroups: u32) {
    for (var e = flat; e < MATRICES * D * D; e += WG) {
        frags[e] = peak_value(e, wid.x);
    }
    workgroupBarrier();
    let fa0 = coopLoadT<CoopA>(&frags[0u], D);
    let fa1 = coopLoadT<CoopA>(&frags[D * D], D);
    let fb0 = coopLoadT<CoopB>(&frags[2u * D * D], D);
    let fb1 = coopLoadT<CoopB>(&frags[3u * D * D], D);
    let fb2 = coopLoadT<CoopB>(&frags[4u * D * D], D);
    let fb3 = coopLoadT<CoopB>(&frags[5u * D * D], D);
    let passes = (BLOCKS + subgroups - 1u) / subgroups;
    for (var turn = 0u; turn < passes; turn++) {
        let block = (turn * subgroups + sg) % BLOCKS;
        // (named, not an array: see pieces/coop_gemm.wgsl)
        var c00 = CoopC(); var c01 = CoopC(); var c02 = CoopC(); var c03 = CoopC();
        var c10 = CoopC(); var c11 = CoopC(); var c12 = CoopC(); var c13 = CoopC();
        for (var r = 0u; r < p.iters; r++) {
            c00 = coopMultiplyAdd(fa0, fb0, c00);
            c01 = coopMultiplyAdd(fa0, fb1, c01);
            c02 = coopMultiplyAdd(fa0, fb2, c02);
            c03 = coopMultiplyAdd(fa0, fb3, c03);
            c10 = coopMultiplyAdd(fa1, fb0, c10);
            c11 = coopMultiplyAdd(fa1, fb1, c11);
            c12 = coopMultiplyAdd(fa1, fb2, c12);
            c13 = coopMultiplyAdd(fa1, fb3, c13);
        }
        // c(a, b) of block k of workgroup w at ((w · BLOCKS + k) · 8 + 4a + b) · D², row-major
        let at = (wid.x * BLOCKS + block) * 8u * D * D;
        coopStoreT(c00, &out[at], D);
        coopStoreT(c01, &out[at + D * D], D);
        coopStoreT(c02, &out[at + 2u * D * D], D);
        coopStoreT(c03, &out[at + 3u * D * D], D);
        coopStoreT(c10, &out[at + 4u * D * D], D);
        coopStoreT(c11, &out[at + 5u * D * D], D);
        coopStoreT(c12, &out[at + 6u * D * D], D);
        coopStoreT(c13, &out[at + 7u * D * D], D);
    }
}
