//! Composes the WGSL kernels into OUT_DIR/shaders/ and writes the tables of their entry points
//! (OUT_DIR/matmul_entries.rs, OUT_DIR/matmul_quant_entries.rs).
//!
//! - Every shaders/<op>.wgsl is copied, with its `// #include "<path>"` lines replaced by the
//!   file they name (relative to the including file; each file once per shader).
//! - <op>_subgroups.wgsl, for each op that includes pieces/reduce.wgsl, is the op with
//!   pieces/reduce_subgroups.wgsl in its place (adapters with subgroups);
//! - <file>_subgroups.wgsl, for each file the matrix-vector kernels run from, is that file
//!   with pieces/gemv_sum_subgroups.wgsl in pieces/gemv_sum.wgsl's place;
//! - attention_wide.wgsl is attention.wgsl for heads of up to 256 (its MAX_HS);
//! - matmul_coop.wgsl is composed again with a low-rank term (`_low_rank`) and on 8 × 8
//!   cooperative matrices (`_8x8`, `_8x8_low_rank`), and the quantized formats' kernels on
//!   cooperative matrices likewise (`matmul_<format>_coop`, `_coop_8x8`), and so is
//!   fma_peak_coop.wgsl (`_8x8`);
//! - matmul_tiled.wgsl is composed again with a low-rank term (`_low_rank`), f16 tiles
//!   (`_f16`, `_f16_low_rank`) and an input norm for its matrix-vector kernels (`_normed`);
//!   the quantized kernels likewise (`matmul_<format>_low_rank`, `_f16_tiles`, `_normed`);
//! - matmul.wgsl is shaders/matmul/f32.wgsl and the unrolled entry points of `matmul.rs`;
//!   matmul_<format>.wgsl is shaders/matmul/quant.wgsl, shaders/matmul/<format>.wgsl,
//!   theirs, shaders/matmul/quant_tiled.wgsl (the GPU kernels, written by hand) and
//!   shaders/matmul/gather.wgsl (token embeddings from a tied lm_head). The entry tables name those entry points for the launchers, so a name is
//!   spelled in one place: here, from the block sizes in core/src/ops/matmul_blocks.rs.
//!
//! shaders/README.md explains the composition.

#[path = "../src/ops/matmul_blocks.rs"]
#[allow(dead_code)]
mod matmul_blocks;
mod matmul;
#[path = "../src/quant/nf4_codebook.rs"]
mod nf4_codebook;

use std::collections::HashSet;
use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let core = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let shaders = core.join("../shaders");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("shaders");
    fs::create_dir_all(&out).unwrap();
    for dir in [&shaders, &shaders.join("matmul"), &shaders.join("pieces"), &core.join("build")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!("cargo:rerun-if-changed={}", core.join("src/ops/matmul_blocks.rs").display());
    println!("cargo:rerun-if-changed={}", core.join("src/quant/nf4_codebook.rs").display());

    let mut ops: Vec<PathBuf> = fs::read_dir(&shaders)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    ops.sort();
    for path in ops {
        let name = path.file_name().unwrap().to_str().unwrap();
        let composed = name == "matmul.wgsl" || matmul::QUANT_FORMATS.iter().any(|f| name == format!("matmul_{}.wgsl", f.name));
        assert!(!composed, "shaders/{name} is composed from shaders/matmul/: delete it");
        write(&out.join(name), &compose(&path));
        if fs::read_to_string(&path).unwrap().contains(REDUCE_PIECE) {
            let variant = compose_swapping(&path, &[(REDUCE_PIECE, "pieces/reduce_subgroups.wgsl")]);
            write(&out.join(name.replace(".wgsl", "_subgroups.wgsl")), &variant);
        }
    }
    let tiled = shaders.join("matmul_tiled.wgsl");
    write(&out.join("matmul_tiled_low_rank.wgsl"), &compose_swapping(&tiled, &[LOW_RANK_OUTPUT]));
    // the tiles in f16 (its `enable` must open the file)
    for (name, swaps) in [("matmul_tiled_f16.wgsl", &[TILE_F16][..]), ("matmul_tiled_f16_low_rank.wgsl", &[TILE_F16, LOW_RANK_OUTPUT])] {
        write(&out.join(name), &format!("enable f16;\n\n{}", compose_swapping(&tiled, swaps)));
    }
    // the matrix-vector kernels with an input norm (decoding)
    write(&out.join("matmul_tiled_normed.wgsl"), &compose_swapping(&tiled, &[NORMED_OUTPUT, INPUT_NORM]));
    // those that run the matrix-vector kernels again, their sums on subgroup operations
    for (name, swaps) in [("matmul_tiled", &[][..]), ("matmul_tiled_low_rank", &[LOW_RANK_OUTPUT]), ("matmul_tiled_normed", &[NORMED_OUTPUT, INPUT_NORM])] {
        write(&out.join(format!("{name}_subgroups.wgsl")), &compose_swapping(&tiled, &[swaps, &[GEMV_SUM]].concat()));
    }
    let coop = shaders.join("matmul_coop.wgsl");
    write(&out.join("matmul_coop_low_rank.wgsl"), &compose_swapping(&coop, &[LOW_RANK_OUTPUT]));
    // on 8 × 8 cooperative matrices (Apple's, lavapipe's)
    write(&out.join("matmul_coop_8x8.wgsl"), &compose_swapping(&coop, &[COOP_8X8]));
    write(&out.join("matmul_coop_8x8_low_rank.wgsl"), &compose_swapping(&coop, &[COOP_8X8, LOW_RANK_OUTPUT]));
    write(&out.join("fma_peak_coop_8x8.wgsl"), &compose_swapping(&shaders.join("fma_peak_coop.wgsl"), &[("pieces/coop_16x16.wgsl", "pieces/coop_8x8.wgsl")]));
    let attention = compose(&shaders.join("attention.wgsl"));
    let narrow = "const MAX_HS: u32 = 128u;";
    assert!(attention.contains(narrow), "shaders/attention.wgsl: `{narrow}` is rewritten for attention_wide.wgsl");
    write(&out.join("attention_wide.wgsl"), &attention.replace(narrow, "const MAX_HS: u32 = 256u;"));

    let dir = shaders.join("matmul");
    write(&out.join("matmul.wgsl"), &(compose(&dir.join("f32.wgsl")) + &matmul::f32_entries()));
    let f32_entries = format!(
        "// Written by core/build/main.rs.\n\n/// matmul.wgsl's entry points, in MatmulKind's order.\npub const F32_ENTRIES: [&str; 3] = {:?};\n/// The narrow block's.\npub const F32_NARROW_ENTRIES: [&str; 3] = {:?};\n",
        matmul::F32_ENTRIES,
        matmul::F32_NARROW_ENTRIES
    );
    write(&out.join("../matmul_entries.rs"), &f32_entries);
    let mut entries = String::from("// Written by core/build/main.rs.\n\n");
    for f in &matmul::QUANT_FORMATS {
        let text = compose(&dir.join("quant.wgsl"))
            + &compose(&dir.join(format!("{}.wgsl", f.name)))
            + &matmul::quant_file_entries(f)
            + &compose(&dir.join("quant_tiled.wgsl"))
            + &compose(&dir.join("gather.wgsl"));
        write(&out.join(format!("matmul_{}.wgsl", f.name)), &text);
        // the GPU kernels again (no generated entry points) with more inputs bound before
        // `out` and pieces swapped: a low-rank term, that with f16 tiles too (whose `enable`
        // must open the file), and an input norm with a term (no NF4: its weights are never
        // stacked)
        let kernels_with = |kernels: &str, inputs: &[&str], swaps: &[(&str, &str)]| {
            compose(&dir.join("quant.wgsl"))
                + &with_bindings_before_out(&compose(&dir.join(format!("{}.wgsl", f.name))), f.name, inputs)
                + &matmul::quant_file_tables(f)
                + &compose_swapping(&dir.join(kernels), swaps)
        };
        let gpu_kernels_with = |inputs: &[&str], swaps: &[(&str, &str)]| kernels_with("quant_tiled.wgsl", inputs, swaps);
        let term = ["term_h", "term_v"];
        write(&out.join(format!("matmul_{}_low_rank.wgsl", f.name)), &gpu_kernels_with(&term, &[LOW_RANK_TERM]));
        let f16_tiles = gpu_kernels_with(&term, &[LOW_RANK_TERM, QUANT_TILE_F16]);
        write(&out.join(format!("matmul_{}_f16_tiles.wgsl", f.name)), &format!("enable f16;\n\n{f16_tiles}"));
        // on cooperative matrices (quant_coop.wgsl instead of the tiled kernels), 16 × 16 and 8 × 8
        for (suffix, swaps) in [("coop", &[][..]), ("coop_8x8", &[COOP_8X8])] {
            let kernels = kernels_with("quant_coop.wgsl", &term, swaps);
            write(&out.join(format!("matmul_{}_{suffix}.wgsl", f.name)), &format!("{COOP_ENABLES}{kernels}"));
        }
        // each file the matrix-vector kernels run from again, their sums on subgroup operations
        // (matmul_<format>.wgsl's: the GPU kernels alone, with its bindings)
        write(&out.join(format!("matmul_{}_subgroups.wgsl", f.name)), &gpu_kernels_with(&[], &[QUANT_GEMV_SUM]));
        write(&out.join(format!("matmul_{}_low_rank_subgroups.wgsl", f.name)), &gpu_kernels_with(&term, &[LOW_RANK_TERM, QUANT_GEMV_SUM]));
        if f.name != "nf4" {
            let normed = ["norm_w", "term_h", "term_v"];
            write(&out.join(format!("matmul_{}_normed.wgsl", f.name)), &gpu_kernels_with(&normed, &[QUANT_INPUT_NORM, LOW_RANK_TERM]));
            write(&out.join(format!("matmul_{}_normed_subgroups.wgsl", f.name)), &gpu_kernels_with(&normed, &[QUANT_INPUT_NORM, LOW_RANK_TERM, QUANT_GEMV_SUM]));
        }
        writeln!(entries, "/// matmul_{}.wgsl's entry points.", f.name).unwrap();
        writeln!(entries, "pub const {}_ENTRIES: QuantEntries = QuantEntries {{", f.name.to_uppercase()).unwrap();
        for (field, entry) in matmul::quant_entries(f.name) {
            writeln!(entries, "    {field}: {entry:?},").unwrap();
        }
        writeln!(entries, "}};\n").unwrap();
    }
    write(&out.join("../matmul_quant_entries.rs"), &entries);
}

/// The strided GEMM's output, swapped for one with a low-rank term: matmul_tiled.wgsl and
/// matmul_coop.wgsl are composed again with it.
const LOW_RANK_OUTPUT: (&str, &str) = ("pieces/gemm_output.wgsl", "pieces/gemm_output_low_rank.wgsl");

/// pieces/coop_gemm.wgsl's 16 × 16 cooperative matrices, swapped for 8 × 8 ones.
const COOP_8X8: (&str, &str) = ("coop_16x16.wgsl", "coop_8x8.wgsl");

/// What must open a file of quantized kernels on cooperative matrices (matmul_coop.wgsl
/// opens with them itself).
const COOP_ENABLES: &str = "enable f16;\nenable wgpu_cooperative_matrix;\n\n";

/// matmul_tiled.wgsl's f32 tiles, swapped for f16 ones.
const TILE_F16: (&str, &str) = ("pieces/tile_f32.wgsl", "pieces/tile_f16.wgsl");

/// The same, as quant_tiled.wgsl includes them.
const QUANT_TILE_F16: (&str, &str) = ("../pieces/tile_f32.wgsl", "../pieces/tile_f16.wgsl");

/// No low-rank term as quant_tiled.wgsl includes it, swapped for a term.
const LOW_RANK_TERM: (&str, &str) = ("../pieces/low_rank_none.wgsl", "../pieces/low_rank_term.wgsl");

/// A quantized format's file with more inputs (each an f32 array) bound just before `out`,
/// which moves on past them, by the binding convention (inputs, then outputs): a low-rank
/// term's H and V, or an input norm's weight.
fn with_bindings_before_out(text: &str, format: &str, inputs: &[&str]) -> String {
    let decl = "var<storage, read_write> out: array<f32>;";
    let line = text.lines().find(|l| l.contains(decl)).unwrap_or_else(|| panic!("shaders/matmul/{format}.wgsl declares no `{decl}`"));
    let binding: usize = line
        .split("@binding(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("shaders/matmul/{format}.wgsl: no binding number in `{line}`"));
    let mut moved = String::new();
    for (i, name) in inputs.iter().enumerate() {
        writeln!(moved, "@group(0) @binding({}) var<storage, read> {name}: array<f32>;", binding + i).unwrap();
    }
    write!(moved, "@group(0) @binding({}) {decl}", binding + inputs.len()).unwrap();
    text.replacen(line, &moved, 1)
}

/// The strided GEMM's output, swapped for one with an input norm's weight before it, and the
/// norm itself in place of none: matmul_tiled.wgsl's matrix-vector kernels norming their
/// input rows.
const NORMED_OUTPUT: (&str, &str) = ("pieces/gemm_output.wgsl", "pieces/gemm_output_normed.wgsl");
const INPUT_NORM: (&str, &str) = ("pieces/input_norm_none.wgsl", "pieces/input_norm.wgsl");

/// The same, as quant_tiled.wgsl includes it.
const QUANT_INPUT_NORM: (&str, &str) = ("../pieces/input_norm_none.wgsl", "../pieces/input_norm.wgsl");

/// The piece whose includers also get a `_subgroups` variant.
const REDUCE_PIECE: &str = "pieces/reduce.wgsl";

/// The matrix-vector kernels' sums, swapped for sums on subgroup operations (the
/// `_subgroups` variants of the files they run from).
const GEMV_SUM: (&str, &str) = ("pieces/gemv_sum.wgsl", "pieces/gemv_sum_subgroups.wgsl");

/// The same, as quant_tiled.wgsl includes them.
const QUANT_GEMV_SUM: (&str, &str) = ("../pieces/gemv_sum.wgsl", "../pieces/gemv_sum_subgroups.wgsl");

/// The file at `path` with its includes expanded.
fn compose(path: &Path) -> String {
    compose_swapping(path, &[])
}

/// [`compose`], including the piece `to` wherever a file includes `from`, for each
/// (from, to) of `swaps`.
fn compose_swapping(path: &Path, swaps: &[(&str, &str)]) -> String {
    let mut seen = HashSet::new();
    let mut text = String::new();
    expand(path, swaps, &mut seen, &mut text);
    text
}

fn expand(path: &Path, swaps: &[(&str, &str)], seen: &mut HashSet<PathBuf>, text: &mut String) {
    let src = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (i, line) in src.lines().enumerate() {
        match line.trim().strip_prefix("// #include ") {
            Some(name) => {
                let name = name.trim().trim_matches('"');
                let name = swaps.iter().find(|(from, _)| *from == name).map_or(name, |(_, to)| to);
                let piece = path.parent().unwrap().join(name);
                let piece = piece.canonicalize().unwrap_or_else(|e| panic!("{}:{}: #include {name}: {e}", path.display(), i + 1));
                if seen.insert(piece.clone()) {
                    expand(&piece, swaps, seen, text);
                }
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
}

/// Writes only when the text changed, so that cargo does not rebuild hearth-core needlessly. A
/// kernel built for the web (wasm32) goes without its comments, indentation and blank lines,
/// and deflated into `<name>.deflate` (core/src/gpu/shader.rs inflates it on first use): the
/// composed kernels repeat their pieces, so 770 KB of text, most of what the page would
/// otherwise download in its wasm, come to about 160 KB. Native builds keep the text as it is,
/// for reading (shaders/README.md). The cooperative-matrix kernels and the `_subgroups`
/// variants go empty there: wgpu's browser backend offers neither cooperative matrices nor
/// subgroups, so no context asks for them (an empty module would fail to compile, not run
/// wrong).
fn write(path: &Path, text: &str) {
    let for_web = path.extension().is_some_and(|e| e == "wgsl") && std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    if !for_web {
        write_bytes(path, text.as_bytes());
        return;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let native_only = name.contains("_coop") || name.ends_with("_subgroups.wgsl");
    let text = if native_only { String::new() } else { without_comments(text) };
    write_bytes(&path.with_file_name(format!("{name}.deflate")), &miniz_oxide::deflate::compress_to_vec(text.as_bytes(), 10));
}

fn write_bytes(path: &Path, bytes: &[u8]) {
    if fs::read(path).ok().as_deref() != Some(bytes) {
        fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// WGSL without `//` comments, indentation and blank lines (WGSL has no string literals, so
/// `//` starts a comment wherever it stands).
fn without_comments(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("").trim()).filter(|l| !l.is_empty()).map(|l| format!("{l}\n")).collect()
}
