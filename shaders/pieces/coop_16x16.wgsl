// matmul_coop.wgsl's cooperative matrices: 16 × 16 × 16 products of f16 into f32 (NVIDIA's
// and AMD's tensor cores over Vulkan). core/build/ swaps in pieces/coop_8x8.wgsl for
// matmul_coop_8x8.wgsl.
const D: u32 = 16u;
alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;
