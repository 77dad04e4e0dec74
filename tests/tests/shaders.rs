//! Every WGSL file parses and validates with naga (the compiler inside wgpu), and every
//! file under shaders/ is in the registry.

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
fn generated_shaders_are_current() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../shaders");
    for (name, text) in hearth_tests::shader_gen::generate_all() {
        let on_disk = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
        assert!(on_disk == text, "shaders/{name} is stale: run `cargo run -p hearth-tests --bin gen-shaders`");
    }
}
