//! Plain constants only: core/build/ includes this file to write the table into the NF4
//! matmul kernel.

/// bitsandbytes' NF4 table: quantiles of N(0, 1) normalised to [−1, 1], with an exact 0.
pub const NF4_CODEBOOK: [f32; 16] = [
    -1.0, -0.696_192_8, -0.525_073_05, -0.394_917_5, -0.284_441_38, -0.184_773_43, -0.091_050_036, 0.0,
    0.079_580_3, 0.160_930_2, 0.246_112_3, 0.337_915_24, 0.440_709_83, 0.562_617, 0.722_956_84, 1.0,
];
