//! Rewrites the generated matmul kernels under shaders/ (see hearth_tests::shader_gen).

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders");
    for (name, text) in hearth_tests::shader_gen::generate_all() {
        let path = dir.join(&name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote shaders/{name}");
    }
}
