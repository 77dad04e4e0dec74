//! The shader registry: every WGSL kernel, compiled into the binary as core/build/ composed
//! it from shaders/ (into OUT_DIR).

/// The registry from one list: each variant's file, and the variant on subgroup operations
/// where there is one (`| Twin`).
macro_rules! shaders {
    ($($(#[$doc:meta])* $name:ident => $file:literal $(| $twin:ident)?,)*) => {
        /// One composed WGSL file, one op family each: shaders/<file_name>, or for the matmul
        /// variants shaders/matmul/ (see shaders/README.md).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Shader {
            $($(#[$doc])* $name,)*
        }

        impl Shader {
            pub const ALL: [Shader; [$($file),*].len()] = [$(Shader::$name),*];

            pub fn file_name(self) -> &'static str {
                match self {
                    $(Shader::$name => $file,)*
                }
            }

            #[cfg(not(target_arch = "wasm32"))]
            pub fn source(self) -> &'static str {
                match self {
                    $(Shader::$name => include_str!(concat!(env!("OUT_DIR"), "/shaders/", $file)),)*
                }
            }

            /// The page carries each file deflated (core/build/): inflated on first use.
            #[cfg(target_arch = "wasm32")]
            pub fn source(self) -> &'static str {
                static TEXT: [std::sync::OnceLock<String>; Shader::ALL.len()] = [const { std::sync::OnceLock::new() }; Shader::ALL.len()];
                let packed: &[u8] = match self {
                    $(Shader::$name => include_bytes!(concat!(env!("OUT_DIR"), "/shaders/", $file, ".deflate")),)*
                };
                TEXT[self as usize].get_or_init(|| {
                    let text = miniz_oxide::inflate::decompress_to_vec(packed).expect("a kernel deflated by core/build/");
                    String::from_utf8(text).expect("WGSL text")
                })
            }

            /// This file's variant on subgroup operations: for the ops with workgroup
            /// reductions, and the files the matrix-vector kernels run from (their sums).
            pub fn with_subgroups(self) -> Option<Shader> {
                match self {
                    $($(Shader::$name => Some(Shader::$twin),)?)*
                    _ => None,
                }
            }
        }
    };
}

shaders! {
    Matmul => "matmul.wgsl",
    MatmulTiled => "matmul_tiled.wgsl" | MatmulTiledSubgroups,
    /// matmul_tiled.wgsl with a low-rank term added in its epilogue (core/build/).
    MatmulTiledLowRank => "matmul_tiled_low_rank.wgsl" | MatmulTiledLowRankSubgroups,
    /// matmul_tiled.wgsl's matrix-vector kernels norming their input rows (core/build/).
    MatmulTiledNormed => "matmul_tiled_normed.wgsl" | MatmulTiledNormedSubgroups,
    /// matmul_tiled.wgsl with its tiles in f16 (adapters with shader-f16; core/build/).
    MatmulTiledF16 => "matmul_tiled_f16.wgsl",
    /// The same with a low-rank term (core/build/).
    MatmulTiledF16LowRank => "matmul_tiled_f16_low_rank.wgsl",
    /// matmul_tiled.wgsl's GEMM on cooperative matrices (adapters that offer them).
    MatmulCoop => "matmul_coop.wgsl",
    /// The same with a low-rank term (core/build/).
    MatmulCoopLowRank => "matmul_coop_low_rank.wgsl",
    /// The two on 8 × 8 cooperative matrices (core/build/).
    MatmulCoop8x8 => "matmul_coop_8x8.wgsl",
    MatmulCoop8x8LowRank => "matmul_coop_8x8_low_rank.wgsl",
    MatmulNf4 => "matmul_nf4.wgsl" | MatmulNf4Subgroups,
    MatmulQ4_0 => "matmul_q4_0.wgsl" | MatmulQ4_0Subgroups,
    MatmulQ4_1 => "matmul_q4_1.wgsl" | MatmulQ4_1Subgroups,
    MatmulQ8_0 => "matmul_q8_0.wgsl" | MatmulQ8_0Subgroups,
    MatmulF16 => "matmul_f16.wgsl" | MatmulF16Subgroups,
    /// The quantized tiled kernels with a low-rank term (core/build/).
    MatmulNf4LowRank => "matmul_nf4_low_rank.wgsl" | MatmulNf4LowRankSubgroups,
    MatmulQ4_0LowRank => "matmul_q4_0_low_rank.wgsl" | MatmulQ4_0LowRankSubgroups,
    MatmulQ4_1LowRank => "matmul_q4_1_low_rank.wgsl" | MatmulQ4_1LowRankSubgroups,
    MatmulQ8_0LowRank => "matmul_q8_0_low_rank.wgsl" | MatmulQ8_0LowRankSubgroups,
    MatmulF16LowRank => "matmul_f16_low_rank.wgsl" | MatmulF16LowRankSubgroups,
    /// The same with their tiles in f16 (adapters with shader-f16; core/build/).
    MatmulNf4F16Tiles => "matmul_nf4_f16_tiles.wgsl",
    MatmulQ4_0F16Tiles => "matmul_q4_0_f16_tiles.wgsl",
    MatmulQ4_1F16Tiles => "matmul_q4_1_f16_tiles.wgsl",
    MatmulQ8_0F16Tiles => "matmul_q8_0_f16_tiles.wgsl",
    MatmulF16F16Tiles => "matmul_f16_f16_tiles.wgsl",
    /// Their forwards and input gradients on 16 × 16 cooperative matrices, with a low-rank
    /// term (matmul/quant_coop.wgsl; core/build/).
    MatmulNf4Coop => "matmul_nf4_coop.wgsl",
    MatmulQ4_0Coop => "matmul_q4_0_coop.wgsl",
    MatmulQ4_1Coop => "matmul_q4_1_coop.wgsl",
    MatmulQ8_0Coop => "matmul_q8_0_coop.wgsl",
    MatmulF16Coop => "matmul_f16_coop.wgsl",
    /// The same on 8 × 8 cooperative matrices (core/build/).
    MatmulNf4Coop8x8 => "matmul_nf4_coop_8x8.wgsl",
    MatmulQ4_0Coop8x8 => "matmul_q4_0_coop_8x8.wgsl",
    MatmulQ4_1Coop8x8 => "matmul_q4_1_coop_8x8.wgsl",
    MatmulQ8_0Coop8x8 => "matmul_q8_0_coop_8x8.wgsl",
    MatmulF16Coop8x8 => "matmul_f16_coop_8x8.wgsl",
    /// The quantized matrix-vector kernels norming their input rows (core/build/; no NF4).
    MatmulQ4_0Normed => "matmul_q4_0_normed.wgsl" | MatmulQ4_0NormedSubgroups,
    MatmulQ4_1Normed => "matmul_q4_1_normed.wgsl" | MatmulQ4_1NormedSubgroups,
    MatmulQ8_0Normed => "matmul_q8_0_normed.wgsl" | MatmulQ8_0NormedSubgroups,
    MatmulF16Normed => "matmul_f16_normed.wgsl" | MatmulF16NormedSubgroups,
    Embedding => "embedding.wgsl",
    Sample => "sample.wgsl",
    Rmsnorm => "rmsnorm.wgsl" | RmsnormSubgroups,
    Rope => "rope.wgsl",
    /// rope.wgsl's forward in place (training's q and k where attention reads them).
    RopeInPlace => "rope_in_place.wgsl",
    Attention => "attention.wgsl",
    /// attention.wgsl for heads above 128 (core/build/).
    AttentionWide => "attention_wide.wgsl",
    /// Training attention as matmuls (software adapters).
    AttentionMatmul => "attention_matmul.wgsl",
    /// Training attention in 64 × 64 tiles of scores that stay in workgroup memory (GPUs).
    AttentionFlash => "attention_flash.wgsl",
    Swiglu => "swiglu.wgsl",
    Residual => "residual.wgsl",
    CrossEntropy => "cross_entropy.wgsl" | CrossEntropySubgroups,
    Adamw => "adamw.wgsl",
    GradNorm => "grad_norm.wgsl" | GradNormSubgroups,
    Dropout => "dropout.wgsl",
    BlockCopy => "block_copy.wgsl",
    /// The GPU's f32 rate with no memory traffic (`hearth bench ops`).
    FmaPeak => "fma_peak.wgsl",
    /// The GPU's rate on 16 × 16 × 16 cooperative matrices with no memory traffic (`hearth
    /// bench ops`), and on 8 × 8 × 8 ones (core/build/).
    FmaPeakCoop => "fma_peak_coop.wgsl",
    FmaPeakCoop8x8 => "fma_peak_coop_8x8.wgsl",
    /// The ops with workgroup reductions, on subgroup operations (core/build/).
    RmsnormSubgroups => "rmsnorm_subgroups.wgsl",
    CrossEntropySubgroups => "cross_entropy_subgroups.wgsl",
    GradNormSubgroups => "grad_norm_subgroups.wgsl",
    /// The files the matrix-vector kernels run from, their workgroup sums on subgroup
    /// operations (core/build/; the quantized formats' with the GPU kernels alone).
    MatmulTiledSubgroups => "matmul_tiled_subgroups.wgsl",
    MatmulTiledLowRankSubgroups => "matmul_tiled_low_rank_subgroups.wgsl",
    MatmulTiledNormedSubgroups => "matmul_tiled_normed_subgroups.wgsl",
    MatmulNf4Subgroups => "matmul_nf4_subgroups.wgsl",
    MatmulQ4_0Subgroups => "matmul_q4_0_subgroups.wgsl",
    MatmulQ4_1Subgroups => "matmul_q4_1_subgroups.wgsl",
    MatmulQ8_0Subgroups => "matmul_q8_0_subgroups.wgsl",
    MatmulF16Subgroups => "matmul_f16_subgroups.wgsl",
    MatmulNf4LowRankSubgroups => "matmul_nf4_low_rank_subgroups.wgsl",
    MatmulQ4_0LowRankSubgroups => "matmul_q4_0_low_rank_subgroups.wgsl",
    MatmulQ4_1LowRankSubgroups => "matmul_q4_1_low_rank_subgroups.wgsl",
    MatmulQ8_0LowRankSubgroups => "matmul_q8_0_low_rank_subgroups.wgsl",
    MatmulF16LowRankSubgroups => "matmul_f16_low_rank_subgroups.wgsl",
    MatmulQ4_0NormedSubgroups => "matmul_q4_0_normed_subgroups.wgsl",
    MatmulQ4_1NormedSubgroups => "matmul_q4_1_normed_subgroups.wgsl",
    MatmulQ8_0NormedSubgroups => "matmul_q8_0_normed_subgroups.wgsl",
    MatmulF16NormedSubgroups => "matmul_f16_normed_subgroups.wgsl",
}

impl Shader {
    /// The kernels that zero their own workgroup memory (see
    /// [`Kernel::pipeline_options`](super::Kernel::pipeline_options)): flash attention's and
    /// the cooperative-matrix ones, whose arrays are the largest.
    pub fn zeroes_own_workgroup_memory(self) -> bool {
        use Shader::*;
        matches!(
            self,
            AttentionFlash
                | MatmulCoop
                | MatmulCoopLowRank
                | MatmulCoop8x8
                | MatmulCoop8x8LowRank
                | MatmulNf4Coop
                | MatmulQ4_0Coop
                | MatmulQ4_1Coop
                | MatmulQ8_0Coop
                | MatmulF16Coop
                | MatmulNf4Coop8x8
                | MatmulQ4_0Coop8x8
                | MatmulQ4_1Coop8x8
                | MatmulQ8_0Coop8x8
                | MatmulF16Coop8x8
        )
    }
}
