//! The shader registry: every WGSL kernel, compiled into the binary as core/build/ composed
//! it from shaders/ (into OUT_DIR).

/// One composed WGSL file, one op family each: shaders/<file_name>, or for the matmul
/// variants shaders/matmul/ (see shaders/README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Matmul,
    MatmulTiled,
    /// matmul_tiled.wgsl with a low-rank term added in its epilogue (core/build/).
    MatmulTiledLowRank,
    /// matmul_tiled.wgsl with its tiles in f16 (adapters with shader-f16; core/build/).
    MatmulTiledF16,
    /// The same with a low-rank term (core/build/).
    MatmulTiledF16LowRank,
    /// matmul_tiled.wgsl's GEMM on cooperative matrices (adapters that offer them).
    MatmulCoop,
    /// The same with a low-rank term (core/build/).
    MatmulCoopLowRank,
    MatmulNf4,
    MatmulQ4_0,
    MatmulQ4_1,
    MatmulQ8_0,
    MatmulF16,
    /// The quantized tiled kernels with a low-rank term (core/build/).
    MatmulNf4LowRank,
    MatmulQ4_0LowRank,
    MatmulQ4_1LowRank,
    MatmulQ8_0LowRank,
    MatmulF16LowRank,
    /// The same with their tiles in f16 (adapters with shader-f16; core/build/).
    MatmulNf4F16Tiles,
    MatmulQ4_0F16Tiles,
    MatmulQ4_1F16Tiles,
    MatmulQ8_0F16Tiles,
    MatmulF16F16Tiles,
    Embedding,
    Rmsnorm,
    Rope,
    Attention,
    /// attention.wgsl for heads above 128 (core/build/).
    AttentionWide,
    /// Training attention as matmuls (software adapters).
    AttentionMatmul,
    Swiglu,
    Residual,
    CrossEntropy,
    Adamw,
    GradNorm,
    Dropout,
    BlockCopy,
    /// The ops with workgroup reductions, on subgroup operations (core/build/).
    RmsnormSubgroups,
    CrossEntropySubgroups,
    GradNormSubgroups,
}

impl Shader {
    pub const ALL: [Shader; 38] = [
        Shader::Matmul,
        Shader::MatmulTiled,
        Shader::MatmulTiledLowRank,
        Shader::MatmulTiledF16,
        Shader::MatmulTiledF16LowRank,
        Shader::MatmulCoop,
        Shader::MatmulCoopLowRank,
        Shader::MatmulNf4,
        Shader::MatmulQ4_0,
        Shader::MatmulQ4_1,
        Shader::MatmulQ8_0,
        Shader::MatmulF16,
        Shader::MatmulNf4LowRank,
        Shader::MatmulQ4_0LowRank,
        Shader::MatmulQ4_1LowRank,
        Shader::MatmulQ8_0LowRank,
        Shader::MatmulF16LowRank,
        Shader::MatmulNf4F16Tiles,
        Shader::MatmulQ4_0F16Tiles,
        Shader::MatmulQ4_1F16Tiles,
        Shader::MatmulQ8_0F16Tiles,
        Shader::MatmulF16F16Tiles,
        Shader::Embedding,
        Shader::Rmsnorm,
        Shader::Rope,
        Shader::Attention,
        Shader::AttentionWide,
        Shader::AttentionMatmul,
        Shader::Swiglu,
        Shader::Residual,
        Shader::CrossEntropy,
        Shader::Adamw,
        Shader::GradNorm,
        Shader::Dropout,
        Shader::BlockCopy,
        Shader::RmsnormSubgroups,
        Shader::CrossEntropySubgroups,
        Shader::GradNormSubgroups,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Matmul => "matmul.wgsl",
            Shader::MatmulTiled => "matmul_tiled.wgsl",
            Shader::MatmulTiledLowRank => "matmul_tiled_low_rank.wgsl",
            Shader::MatmulTiledF16 => "matmul_tiled_f16.wgsl",
            Shader::MatmulTiledF16LowRank => "matmul_tiled_f16_low_rank.wgsl",
            Shader::MatmulCoop => "matmul_coop.wgsl",
            Shader::MatmulCoopLowRank => "matmul_coop_low_rank.wgsl",
            Shader::MatmulNf4 => "matmul_nf4.wgsl",
            Shader::MatmulQ4_0 => "matmul_q4_0.wgsl",
            Shader::MatmulQ4_1 => "matmul_q4_1.wgsl",
            Shader::MatmulQ8_0 => "matmul_q8_0.wgsl",
            Shader::MatmulF16 => "matmul_f16.wgsl",
            Shader::MatmulNf4LowRank => "matmul_nf4_low_rank.wgsl",
            Shader::MatmulQ4_0LowRank => "matmul_q4_0_low_rank.wgsl",
            Shader::MatmulQ4_1LowRank => "matmul_q4_1_low_rank.wgsl",
            Shader::MatmulQ8_0LowRank => "matmul_q8_0_low_rank.wgsl",
            Shader::MatmulF16LowRank => "matmul_f16_low_rank.wgsl",
            Shader::MatmulNf4F16Tiles => "matmul_nf4_f16_tiles.wgsl",
            Shader::MatmulQ4_0F16Tiles => "matmul_q4_0_f16_tiles.wgsl",
            Shader::MatmulQ4_1F16Tiles => "matmul_q4_1_f16_tiles.wgsl",
            Shader::MatmulQ8_0F16Tiles => "matmul_q8_0_f16_tiles.wgsl",
            Shader::MatmulF16F16Tiles => "matmul_f16_f16_tiles.wgsl",
            Shader::Embedding => "embedding.wgsl",
            Shader::Rmsnorm => "rmsnorm.wgsl",
            Shader::Rope => "rope.wgsl",
            Shader::Attention => "attention.wgsl",
            Shader::AttentionWide => "attention_wide.wgsl",
            Shader::AttentionMatmul => "attention_matmul.wgsl",
            Shader::Swiglu => "swiglu.wgsl",
            Shader::Residual => "residual.wgsl",
            Shader::CrossEntropy => "cross_entropy.wgsl",
            Shader::Adamw => "adamw.wgsl",
            Shader::GradNorm => "grad_norm.wgsl",
            Shader::Dropout => "dropout.wgsl",
            Shader::BlockCopy => "block_copy.wgsl",
            Shader::RmsnormSubgroups => "rmsnorm_subgroups.wgsl",
            Shader::CrossEntropySubgroups => "cross_entropy_subgroups.wgsl",
            Shader::GradNormSubgroups => "grad_norm_subgroups.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::Matmul => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul.wgsl")),
            Shader::MatmulTiled => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_tiled.wgsl")),
            Shader::MatmulTiledLowRank => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_tiled_low_rank.wgsl")),
            Shader::MatmulTiledF16 => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_tiled_f16.wgsl")),
            Shader::MatmulTiledF16LowRank => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_tiled_f16_low_rank.wgsl")),
            Shader::MatmulCoop => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_coop.wgsl")),
            Shader::MatmulCoopLowRank => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_coop_low_rank.wgsl")),
            Shader::MatmulNf4 => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_nf4.wgsl")),
            Shader::MatmulQ4_0 => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q4_0.wgsl")),
            Shader::MatmulQ4_1 => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q4_1.wgsl")),
            Shader::MatmulQ8_0 => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q8_0.wgsl")),
            Shader::MatmulF16 => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_f16.wgsl")),
            Shader::MatmulNf4LowRank => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_nf4_low_rank.wgsl")),
            Shader::MatmulQ4_0LowRank => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q4_0_low_rank.wgsl")),
            Shader::MatmulQ4_1LowRank => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q4_1_low_rank.wgsl")),
            Shader::MatmulQ8_0LowRank => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q8_0_low_rank.wgsl")),
            Shader::MatmulF16LowRank => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_f16_low_rank.wgsl")),
            Shader::MatmulNf4F16Tiles => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_nf4_f16_tiles.wgsl")),
            Shader::MatmulQ4_0F16Tiles => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q4_0_f16_tiles.wgsl")),
            Shader::MatmulQ4_1F16Tiles => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q4_1_f16_tiles.wgsl")),
            Shader::MatmulQ8_0F16Tiles => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_q8_0_f16_tiles.wgsl")),
            Shader::MatmulF16F16Tiles => include_str!(concat!(env!("OUT_DIR"), "/shaders/matmul_f16_f16_tiles.wgsl")),
            Shader::Embedding => include_str!(concat!(env!("OUT_DIR"), "/shaders/embedding.wgsl")),
            Shader::Rmsnorm => include_str!(concat!(env!("OUT_DIR"), "/shaders/rmsnorm.wgsl")),
            Shader::Rope => include_str!(concat!(env!("OUT_DIR"), "/shaders/rope.wgsl")),
            Shader::Attention => include_str!(concat!(env!("OUT_DIR"), "/shaders/attention.wgsl")),
            Shader::AttentionWide => include_str!(concat!(env!("OUT_DIR"), "/shaders/attention_wide.wgsl")),
            Shader::AttentionMatmul => include_str!(concat!(env!("OUT_DIR"), "/shaders/attention_matmul.wgsl")),
            Shader::Swiglu => include_str!(concat!(env!("OUT_DIR"), "/shaders/swiglu.wgsl")),
            Shader::Residual => include_str!(concat!(env!("OUT_DIR"), "/shaders/residual.wgsl")),
            Shader::CrossEntropy => include_str!(concat!(env!("OUT_DIR"), "/shaders/cross_entropy.wgsl")),
            Shader::Adamw => include_str!(concat!(env!("OUT_DIR"), "/shaders/adamw.wgsl")),
            Shader::GradNorm => include_str!(concat!(env!("OUT_DIR"), "/shaders/grad_norm.wgsl")),
            Shader::Dropout => include_str!(concat!(env!("OUT_DIR"), "/shaders/dropout.wgsl")),
            Shader::BlockCopy => include_str!(concat!(env!("OUT_DIR"), "/shaders/block_copy.wgsl")),
            Shader::RmsnormSubgroups => include_str!(concat!(env!("OUT_DIR"), "/shaders/rmsnorm_subgroups.wgsl")),
            Shader::CrossEntropySubgroups => include_str!(concat!(env!("OUT_DIR"), "/shaders/cross_entropy_subgroups.wgsl")),
            Shader::GradNormSubgroups => include_str!(concat!(env!("OUT_DIR"), "/shaders/grad_norm_subgroups.wgsl")),
        }
    }

    /// This file's variant on subgroup operations, for the ops with workgroup reductions.
    pub fn with_subgroups(self) -> Option<Shader> {
        match self {
            Shader::Rmsnorm => Some(Shader::RmsnormSubgroups),
            Shader::CrossEntropy => Some(Shader::CrossEntropySubgroups),
            Shader::GradNorm => Some(Shader::GradNormSubgroups),
            _ => None,
        }
    }
}
