//! Every WGSL file parses and validates with naga (the compiler inside wgpu) and translates
//! for Metal and DX12, and every file under shaders/ is in the registry.

use hearth_core::gpu::Shader;

#[test]
fn every_shader_validates_with_naga() {
    for shader in Shader::ALL {
        let module = naga::front::wgsl::parse_str(shader.source())
            .unwrap_or_else(|e| panic!("{}: {}", shader.file_name(), e.emit_to_string(shader.source())));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", shader.file_name(), e.emit_to_string(shader.source())));
        assert!(!module.entry_points.is_empty(), "{} has no entry point", shader.file_name());
    }
}

/// Each entry point, its overrides at their defaults, through naga's MSL and HLSL writers as
/// wgpu writes it on Metal (MSL 2.4: simdgroup operations, half) and DX12 (shader model 6.2:
/// wave operations, 16-bit types): what a Mac or a Windows machine compiles, which no machine
/// here runs. The cooperative-matrix kernels for Metal alone and on 8 × 8 matrices alone: wgpu
/// offers cooperative matrices on Vulkan and Metal, whose simdgroup matrices are 8 × 8 (though
/// Hearth takes them only where wgpu reports one subgroup size, which it does not on Metal).
#[test]
fn every_shader_translates_for_metal_and_dx12() {
    use naga::back::{hlsl, msl};
    for shader in Shader::ALL.iter().filter(|s| !s.file_name().contains("_coop") || s.file_name().contains("_8x8")) {
        let name = shader.file_name();
        let coop = name.contains("_coop");
        let module = naga::front::wgsl::parse_str(shader.source()).unwrap();
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all()).validate(&module).unwrap();
        for ep in &module.entry_points {
            let entry = Some((ep.stage, ep.name.clone()));
            let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, Some((ep.stage, &ep.name)), &Default::default())
                .unwrap_or_else(|e| panic!("{name}, {}: overrides: {e}", ep.name));
            let options = msl::Options { lang_version: (2, 4), ..Default::default() };
            msl::write_string(&module, &info, &options, &msl::PipelineOptions { entry_point: entry.clone(), ..Default::default() })
                .unwrap_or_else(|e| panic!("{name}, {}: MSL: {e}", ep.name));
            if coop {
                continue;
            }
            let options = hlsl::Options { shader_model: hlsl::ShaderModel::V6_2, ..Default::default() };
            let mut out = String::new();
            hlsl::Writer::new(&mut out, &options, &hlsl::PipelineOptions { entry_point: entry })
                .write(&module, &info, None)
                .unwrap_or_else(|e| panic!("{name}, {}: HLSL: {e}", ep.name));
        }
    }
}

#[test]
fn every_wgsl_file_is_registered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shaders");
    let registered: Vec<&str> = Shader::ALL.iter().map(|s| s.file_name()).collect();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wgsl") {
            assert!(registered.contains(&name.as_str()), "shaders/{name} is not in the Shader registry");
        }
    }
}

#[test]
fn every_piece_is_included() {
    // A piece that no kernel includes would be edited in vain.
    let shaders = concat!(env!("CARGO_MANIFEST_DIR"), "/../shaders");
    let mut texts = String::new();
    for dir in ["", "/matmul", "/pieces"] {
        for entry in std::fs::read_dir(format!("{shaders}{dir}")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wgsl") {
                texts.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    for name in ["gguf_reads.wgsl", "nibbles.wgsl"] {
        assert!(texts.contains(&format!("// #include \"{name}\"")), "shaders/matmul/{name} is included nowhere");
    }
    // the file names the includes name, from whichever folder
    let included: Vec<&str> = texts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("// #include "))
        .map(|path| path.trim_matches('"').rsplit('/').next().unwrap())
        .collect();
    for entry in std::fs::read_dir(format!("{shaders}/pieces")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        // core/build/ puts this one in reduce.wgsl's place for the `_subgroups` variants
        if name == "reduce_subgroups.wgsl" {
            assert!(Shader::ALL.iter().any(|s| s.source().contains("subgroupAdd")), "no `_subgroups` variant was composed");
            continue;
        }
        // and this one in gemv_sum.wgsl's, for the files the matrix-vector kernels run from
        if name == "gemv_sum_subgroups.wgsl" {
            for shader in [Shader::MatmulTiledNormed, Shader::MatmulQ4_1, Shader::MatmulNf4LowRank] {
                let twin = shader.with_subgroups().expect("a `_subgroups` variant");
                assert!(twin.source().contains("subgroupAdd("), "{} does not sum on subgroups", twin.file_name());
                assert!(!shader.source().contains("subgroupAdd"), "{} sums on subgroups", shader.file_name());
            }
            continue;
        }
        // and this one in gemm_output.wgsl's, for matmul_tiled_low_rank.wgsl
        if name == "gemm_output_low_rank.wgsl" {
            assert!(Shader::MatmulTiledLowRank.source().contains("term_h["), "matmul_tiled_low_rank.wgsl has no low-rank term");
            continue;
        }
        // and this one in coop_16x16.wgsl's, for matmul_coop_8x8.wgsl and matmul_<format>_coop_8x8.wgsl
        if name == "coop_8x8.wgsl" {
            for shader in [Shader::MatmulCoop8x8, Shader::MatmulCoop8x8LowRank, Shader::MatmulQ4_1Coop8x8] {
                assert!(shader.source().contains("alias CoopC = coop_mat8x8<f32, C>;"), "{}'s matrices are not 8 × 8", shader.file_name());
            }
            continue;
        }
        // and this one in tile_f32.wgsl's, for matmul_tiled_f16.wgsl
        if name == "tile_f16.wgsl" {
            assert!(Shader::MatmulTiledF16.source().contains("alias TileElem = f16;"), "matmul_tiled_f16.wgsl's tiles are not f16");
            continue;
        }
        // and these two in gemm_output.wgsl's and input_norm_none.wgsl's, for the matrix-vector
        // kernels that norm their input (matmul_tiled_normed.wgsl, matmul_<format>_normed.wgsl)
        if name == "gemm_output_normed.wgsl" || name == "input_norm.wgsl" {
            for shader in [Shader::MatmulTiledNormed, Shader::MatmulQ4_1Normed] {
                assert!(shader.source().contains("return norm_w[r];"), "{} does not norm its input", shader.file_name());
            }
            continue;
        }
        assert!(included.contains(&name.as_str()), "shaders/pieces/{name} is included nowhere");
    }
}
