// matmul_coop.wgsl's cooperative matrices as 8 × 8 × 8 products of f16 into f32: what Mesa's
// lavapipe (from 26.1) and Apple's simdgroup matrices (Metal) offer.
const D: u32 = 8u;
alias CoopA = coop_mat8x8<f16, A>;
alias CoopB = coop_mat8x8<f16, B>;
alias CoopC = coop_mat8x8<f32, C>;
