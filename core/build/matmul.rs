//! The unrolled bodies of the register-blocked matmul kernels. WGSL has neither macros nor
//! loops the compiler must unroll, and on software adapters a dynamically indexed private
//! array spills, so each invocation's block of accumulators is written out here as
//! c{row}_{vec4}. Everything else in those files is plain WGSL under shaders/matmul/.


use crate::matmul_blocks::*;
use crate::nf4_codebook::NF4_CODEBOOK;

/// A quantized format: its file under shaders/matmul/ and the weights its `load_chunk`
/// reads at once (the forward's unit of reading; `decode8` then takes 8 at a time).
pub struct QuantFormat {
    pub name: &'static str,
    chunk: usize,
}

pub const QUANT_FORMATS: [QuantFormat; 5] = [
    QuantFormat { name: "nf4", chunk: 32 },
    QuantFormat { name: "q4_0", chunk: 32 },
    QuantFormat { name: "q4_1", chunk: 32 },
    QuantFormat { name: "q8_0", chunk: 32 },
    QuantFormat { name: "f16", chunk: 8 },
];

/// The f32 kernel's entry points, in MatmulKind order.
pub const F32_ENTRIES: [&str; 3] = ["matmul_forward", "matmul_backward_input", "matmul_backward_weight"];
/// The same for the narrow block (`REGISTER_NARROW_BLOCK`).
pub const F32_NARROW_ENTRIES: [&str; 3] = ["matmul_forward_narrow", "matmul_backward_input_narrow", "matmul_backward_weight_narrow"];

/// A quantized format's entry points: (field of QuantEntries, name).
pub fn quant_entries(name: &str) -> [(&'static str, String); 5] {
    let f = |(r, c): (usize, usize)| format!("matmul_{name}_forward_{r}x{c}");
    let b = |(r, c): (usize, usize)| format!("matmul_{name}_backward_input_{r}x{c}");
    [
        ("forward_large", f(QUANT_FORWARD_LARGE)),
        ("forward_small", f(QUANT_FORWARD_SMALL)),
        ("forward_row", f(QUANT_FORWARD_ROW)),
        ("backward_input_large", b(QUANT_BACKWARD_INPUT_LARGE)),
        ("backward_input_small", b(QUANT_BACKWARD_INPUT_SMALL)),
    ]
}

/// Outputs per invocation of a kernel: `rows` × `cols`, `cols` a multiple of 4.
#[derive(Clone, Copy)]
struct Block {
    rows: usize,
    cols: usize,
}

impl From<(usize, usize)> for Block {
    fn from((rows, cols): (usize, usize)) -> Self {
        Block { rows, cols }
    }
}

struct Out(String);

impl Out {
    fn line(&mut self, s: impl AsRef<str>) {
        self.0.push_str(s.as_ref());
        self.0.push('\n');
    }
}


/// matmul.wgsl's generated part: its workgroup and its entry points, three per block.
pub fn f32_entries() -> String {
    let (wg_x, wg_y) = REGISTER_WG;
    let mut o = Out(String::new());
    o.line(format!("override WG_X: u32 = {wg_x}u;"));
    o.line(format!("override WG_Y: u32 = {wg_y}u;"));
    // The narrow block's output is one block wide: its row blocks run along x, the
    // dimension llvmpipe spreads over its SIMD lanes.
    for (entries, block, rows_on_x) in [(F32_ENTRIES, REGISTER_BLOCK, false), (F32_NARROW_ENTRIES, REGISTER_NARROW_BLOCK, true)] {
        let b = F32Block { rows: block.0, cols: block.1, rows_on_x };
        f32_forward(&mut o, entries[0], b);
        f32_backward_input(&mut o, entries[1], b);
        f32_backward_weight(&mut o, entries[2], b);
    }
    o.0
}

/// The constants a format's decoding reads that core/build/ writes (NF4's code table).
pub fn quant_file_tables(f: &QuantFormat) -> String {
    if f.name == "nf4" {
        format!("\n{}", nf4_table())
    } else {
        String::new()
    }
}

/// matmul_<format>.wgsl's generated part: its workgroups, NF4's table, its entry points.
pub fn quant_file_entries(f: &QuantFormat) -> String {
    let mut o = Out(String::new());
    o.line(format!("override WG_X: u32 = {}u;", QUANT_WG.0));
    o.line(format!("override WG_Y: u32 = {}u;", QUANT_WG.1));
    o.line(format!("override ROW_WG: u32 = {QUANT_ROW_WG}u;"));
    o.0.push_str(&quant_file_tables(f));
    quant_forward(&mut o, f, QUANT_FORWARD_LARGE.into());
    quant_forward(&mut o, f, QUANT_FORWARD_SMALL.into());
    quant_forward_row(&mut o, f.name, QUANT_FORWARD_ROW.1);
    quant_backward_input(&mut o, f.name, QUANT_BACKWARD_INPUT_LARGE.into());
    quant_backward_input(&mut o, f.name, QUANT_BACKWARD_INPUT_SMALL.into());
    o.0
}

/// An f32 entry point's outputs per invocation, and which grid dimension its row blocks take
/// (y, or x with the column blocks on y).
#[derive(Clone, Copy)]
struct F32Block {
    rows: usize,
    cols: usize,
    rows_on_x: bool,
}

/// Declares the accumulators c{i}_{q}: `rows` × `cols / 4` vec4.
fn accumulators(o: &mut Out, rows: usize, vec4s: usize) {
    for i in 0..rows {
        let decl: Vec<String> = (0..vec4s).map(|q| format!("var c{i}_{q} = vec4<f32>();")).collect();
        o.line(format!("    {}", decl.join(" ")));
    }
}

/// Stores the accumulators at rows r0 + i (< `nrows`) and vec4 columns q0 + q (< `ncols4`)
/// of a row-major matrix with `ncols4` vec4 per row from `c_off`, through `st`. Unrolled:
/// copying them into an indexed private array made llvmpipe's compile minutes long.
fn store_vec4(o: &mut Out, rows: usize, vec4s: usize) {
    for i in 0..rows {
        o.line(format!("    if (r0 + {i}u < nrows) {{"));
        o.line(format!("        let r = c_off + (r0 + {i}u) * ncols4 + q0;"));
        let st: Vec<String> = (0..vec4s).map(|q| format!("if (q0 + {q}u < ncols4) {{ st(r + {q}u, c{i}_{q}); }}")).collect();
        o.line(format!("        {}", st.join(" ")));
        o.line("    }");
    }
}

/// Stores of the quantized kernels: rows m0 + i (< p.M) of a row-major matrix with
/// `ncols` columns, columns col0 + 4q .. + 4 through `st4`.
fn store_scalar(o: &mut Out, rows: usize, vec4s: usize, ncols: &str, col0: &str) {
    for i in 0..rows {
        o.line(format!("    if (m0 + {i}u < p.M) {{"));
        o.line(format!("        let r = (m0 + {i}u) * {ncols} + {col0};"));
        let st: Vec<String> = (0..vec4s).map(|q| format!("st4(r + {0}u, {col0} + {0}u, {ncols}, c{i}_{q});", 4 * q)).collect();
        o.line(format!("        {}", st.join(" ")));
        o.line("    }");
    }
}

/// The start of an f32 entry point: rows r0.. and vec4 columns q0.. of its output block,
/// the early return past the output (`nrows` × `ncols4` vec4), and the batch offsets of a,
/// b and c (in vec4) as WGSL expressions.
fn f32_prologue(o: &mut Out, entry: &str, what: &str, blk: F32Block, (nrows, ncols4): (&str, &str), offsets: [&str; 3]) {
    let (rows, q4) = (blk.rows, blk.cols / 4);
    let (row_dim, col_dim) = if blk.rows_on_x { ("x", "y") } else { ("y", "x") };
    o.line("");
    o.line(format!("// Each invocation: rows r0.. r0+{rows} of {what}"));
    o.line("@compute @workgroup_size(WG_X, WG_Y, 1)");
    o.line(format!("fn {entry}(@builtin(global_invocation_id) gid: vec3<u32>) {{"));
    o.line("    let K4 = p.K / 4u;");
    o.line("    let N4 = p.N / 4u;");
    o.line(format!("    let r0 = gid.{row_dim} * {rows}u;"));
    o.line(format!("    let q0 = gid.{col_dim} * {q4}u;"));
    o.line(format!("    let nrows = {nrows};"));
    o.line(format!("    let ncols4 = {ncols4};"));
    o.line("    if (r0 >= nrows || q0 >= ncols4) { return; }");
    for (name, off) in ["a_off", "b_off", "c_off"].iter().zip(offsets) {
        o.line(format!("    let {name} = gid.z * {off};"));
    }
}

fn f32_forward(o: &mut Out, entry: &str, blk: F32Block) {
    let (rows, cols) = (blk.rows, blk.cols);
    let q4 = cols / 4;
    let what = format!("c(M,N), vec4 columns q0.. q0+{q4}.");
    f32_prologue(o, entry, &what, blk, ("p.M", "N4"), ["p.M * K4", "p.b_batched * p.N * K4", "p.M * N4"]);
    for i in 0..rows {
        o.line(format!("    let ra{i} = a_off + min(r0 + {i}u, p.M - 1u) * K4;"));
    }
    for j in 0..cols {
        o.line(format!("    let rb{j} = b_off + min(4u * q0 + {j}u, p.N - 1u) * K4;"));
    }
    accumulators(o, rows, q4);
    o.line("    for (var k4 = 0u; k4 < K4; k4++) {");
    // Weight rows j..j+4 as the columns of a transposed tile: tile·x = (w_j·x, ..., w_j+3·x).
    for q in 0..q4 {
        let j = 4 * q;
        o.line(format!(
            "        let w{q} = transpose(mat4x4<f32>(b[rb{j} + k4], b[rb{} + k4], b[rb{} + k4], b[rb{} + k4]));",
            j + 1,
            j + 2,
            j + 3
        ));
    }
    for i in 0..rows {
        let upd: Vec<String> = (0..q4).map(|q| format!("c{i}_{q} += w{q} * x;")).collect();
        o.line(format!("        {{ let x = a[ra{i} + k4]; {} }}", upd.join(" ")));
    }
    o.line("    }");
    store_vec4(o, rows, q4);
    o.line("}");
}

fn f32_backward_input(o: &mut Out, entry: &str, blk: F32Block) {
    let (rows, cols) = (blk.rows, blk.cols);
    let q4 = cols / 4;
    let what = format!("c(M,K), vec4 columns q0.. q0+{q4}; steps of 4 along N.");
    f32_prologue(o, entry, &what, blk, ("p.M", "K4"), ["p.M * N4", "p.b_batched * p.N * K4", "p.M * K4"]);
    for i in 0..rows {
        o.line(format!("    let ra{i} = a_off + min(r0 + {i}u, p.M - 1u) * N4;"));
    }
    for q in 0..q4 {
        o.line(format!("    let kq{q} = min(q0 + {q}u, K4 - 1u);"));
    }
    accumulators(o, rows, q4);
    o.line("    for (var n4 = 0u; n4 < N4; n4++) {");
    o.line("        let rb = b_off + 4u * n4 * K4;");
    // Columns of w{q} are rows n..n+4 of b at vec4 column q: w·x = Σ_t b[n+t]·x[t].
    for q in 0..q4 {
        o.line(format!(
            "        let w{q} = mat4x4<f32>(b[rb + kq{q}], b[rb + K4 + kq{q}], b[rb + 2u * K4 + kq{q}], b[rb + 3u * K4 + kq{q}]);"
        ));
    }
    for i in 0..rows {
        let upd: Vec<String> = (0..q4).map(|q| format!("c{i}_{q} += w{q} * x;")).collect();
        o.line(format!("        {{ let x = a[ra{i} + n4]; {} }}", upd.join(" ")));
    }
    o.line("    }");
    store_vec4(o, rows, q4);
    o.line("}");
}

fn f32_backward_weight(o: &mut Out, entry: &str, blk: F32Block) {
    let (rows, cols) = (blk.rows, blk.cols);
    let q4 = cols / 4;
    let r4 = rows / 4;
    let what = format!("c(N,K), vec4 columns q0.. q0+{q4}; four rows of a and b per step.");
    f32_prologue(o, entry, &what, blk, ("p.N", "K4"), ["p.M * N4", "p.b_batched * p.M * K4", "p.N * K4"]);
    for j in 0..r4 {
        o.line(format!("    let na{j} = min(r0 / 4u + {j}u, N4 - 1u);"));
    }
    for q in 0..q4 {
        o.line(format!("    let kq{q} = min(q0 + {q}u, K4 - 1u);"));
    }
    accumulators(o, rows, q4);
    // Four rows of a and b per step, so that each accumulator takes four FMAs per visit
    // (x{q} as the columns of a matrix, times four values of a); rows past M weigh 0.
    o.line("    for (var m4 = 0u; m4 < (p.M + 3u) / 4u; m4++) {");
    for t in 0..4 {
        o.line(format!("        let m{t} = 4u * m4 + {t}u;"));
        o.line(format!("        let ra{t} = a_off + min(m{t}, p.M - 1u) * N4;"));
        o.line(format!("        let rb{t} = b_off + min(m{t}, p.M - 1u) * K4;"));
        o.line(format!("        let v{t} = select(0.0, 1.0, m{t} < p.M);"));
    }
    for q in 0..q4 {
        o.line(format!(
            "        let x{q} = mat4x4<f32>(v0 * b[rb0 + kq{q}], v1 * b[rb1 + kq{q}], v2 * b[rb2 + kq{q}], v3 * b[rb3 + kq{q}]);"
        ));
    }
    for j in 0..r4 {
        // Row e of g{j}: a[m0..m4, 4j + e], the four values that multiply x{q}.
        o.line(format!(
            "        let g{j} = transpose(mat4x4<f32>(a[ra0 + na{j}], a[ra1 + na{j}], a[ra2 + na{j}], a[ra3 + na{j}]));"
        ));
        for e in 0..4 {
            let i = 4 * j + e;
            let upd: Vec<String> = (0..q4).map(|q| format!("c{i}_{q} += x{q} * g{j}[{e}];")).collect();
            o.line(format!("        {}", upd.join(" ")));
        }
    }
    o.line("    }");
    store_vec4(o, rows, q4);
    o.line("}");
}

/// NF4's code values as a WGSL constant, written from the CPU's table.
fn nf4_table() -> String {
    let vec4s: Vec<String> = NF4_CODEBOOK
        .chunks(4)
        .map(|v| format!("vec4<f32>({:?}, {:?}, {:?}, {:?})", v[0], v[1], v[2], v[3]))
        .collect();
    format!("// NF4's 16 code values, written by core/build/ from core/src/quant/nf4_codebook.rs.\nconst NF4_TABLE = array<vec4<f32>, 4>(\n    {});\n", vec4s.join(",\n    "))
}

/// The forward for one row of inp at a time (decoding a token): `cols` rows of W per
/// invocation, a whole block per step, so each word of W is read once and each vec4 of x
/// feeds `cols` rows. The blocked kernels would compute mostly clamped, repeated rows.
fn quant_forward_row(o: &mut Out, name: &str, cols: usize) {
    o.line("");
    o.line(format!("// Each invocation: row m = gid.y of inp × rows n0.. n0+{cols} of W; K must be a multiple of 32."));
    o.line("@compute @workgroup_size(ROW_WG, 1, 1)");
    o.line(format!("fn matmul_{name}_forward_1x{cols}(@builtin(global_invocation_id) gid: vec3<u32>) {{"));
    o.line("    let m = gid.y;");
    o.line(format!("    let n0 = gid.x * {cols}u;"));
    o.line("    if (m >= p.M || n0 >= p.N) { return; }");
    o.line("    let ra = m * (p.K / 4u);");
    for j in 0..cols {
        o.line(format!("    let rn{j} = min(n0 + {j}u, p.N - 1u);"));
    }
    let accs: Vec<String> = (0..cols).map(|j| format!("var c{j} = 0.0;")).collect();
    o.line(format!("    {}", accs.join(" ")));
    o.line("    for (var b = 0u; b < p.K / 32u; b++) {");
    o.line("        let xi = ra + 8u * b;");
    let xs: Vec<String> = (0..8).map(|t| format!("inp[xi + {t}u]")).collect();
    o.line(format!("        let x = array<vec4<f32>, 8>({});", xs.join(", ")));
    for j in 0..cols {
        o.line(format!("        c{j} += dot32(rn{j}, b, x);"));
    }
    o.line("    }");
    for q in 0..cols / 4 {
        let c: Vec<String> = (0..4).map(|e| format!("c{}", 4 * q + e)).collect();
        o.line(format!("    st4(m * p.N + n0 + {0}u, n0 + {0}u, p.N, vec4<f32>({1}));", 4 * q, c.join(", ")));
    }
    o.line("}");
}

fn quant_forward(o: &mut Out, f: &QuantFormat, b: Block) {
    let Block { rows, cols } = b;
    let (name, steps) = (f.name, f.chunk / 8);
    let q4 = cols / 4;
    o.line("");
    o.line(format!("// Each invocation: rows m0.. m0+{rows} of inp × rows n0.. n0+{cols} of W, a chunk of"));
    o.line(format!("// {} weights of each W row per step, decoded 8 at a time from registers.", f.chunk));
    o.line("@compute @workgroup_size(WG_X, WG_Y, 1)");
    o.line(format!("fn matmul_{name}_forward_{rows}x{cols}(@builtin(global_invocation_id) gid: vec3<u32>) {{"));
    o.line("    let K4 = p.K / 4u;");
    o.line(format!("    let m0 = gid.y * {rows}u;"));
    o.line(format!("    let n0 = gid.x * {cols}u;"));
    o.line("    if (m0 >= p.M || n0 >= p.N) { return; }");
    for i in 0..rows {
        o.line(format!("    let ra{i} = min(m0 + {i}u, p.M - 1u) * K4;"));
    }
    for j in 0..cols {
        o.line(format!("    let rn{j} = min(n0 + {j}u, p.N - 1u);"));
    }
    accumulators(o, rows, q4);
    o.line(format!("    for (var c = 0u; c < p.K / {}u; c++) {{", f.chunk));
    for j in 0..cols {
        o.line(format!("        let ch{j} = load_chunk(rn{j}, c);"));
    }
    // A loop, not unrolled steps: the body is large, and llvmpipe's compile time grows with it.
    let indent = if steps > 1 {
        o.line(format!("        for (var s = 0u; s < {steps}u; s++) {{"));
        "            "
    } else {
        o.line("        let s = 0u;");
        "        "
    };
    o.line(format!("{indent}let x2 = {}u * c + 2u * s;", f.chunk / 4));
    for j in 0..cols {
        o.line(format!("{indent}let d{j} = decode8(ch{j}, s);"));
    }
    // lo{q}/hi{q}: weights k..k+4 / k+4..k+8 of rows 4q..4q+4 as transposed tiles.
    for q in 0..q4 {
        let j = 4 * q;
        for (h, half) in ["lo", "hi"].iter().enumerate() {
            o.line(format!(
                "{indent}let {half}{q} = transpose(mat4x4<f32>(d{j}[{h}], d{}[{h}], d{}[{h}], d{}[{h}]));",
                j + 1,
                j + 2,
                j + 3
            ));
        }
    }
    for i in 0..rows {
        let upd: Vec<String> = (0..q4).map(|q| format!("c{i}_{q} += lo{q} * x0 + hi{q} * x1;")).collect();
        o.line(format!("{indent}{{ let x0 = inp[ra{i} + x2]; let x1 = inp[ra{i} + x2 + 1u]; {} }}", upd.join(" ")));
    }
    if steps > 1 {
        o.line("        }");
    }
    o.line("    }");
    store_scalar(o, rows, q4, "p.N", "n0");
    o.line("}");
}

fn quant_backward_input(o: &mut Out, name: &str, b: Block) {
    let Block { rows, cols } = b;
    assert!(cols % 8 == 0, "backward blocks span whole groups of 8 columns");
    let q4 = cols / 4;
    o.line("");
    o.line(format!("// Each invocation: rows m0.. m0+{rows} of out(M,K), columns k0.. k0+{cols}; steps of 4 rows of W."));
    o.line("@compute @workgroup_size(WG_X, WG_Y, 1)");
    o.line(format!("fn matmul_{name}_backward_input_{rows}x{cols}(@builtin(global_invocation_id) gid: vec3<u32>) {{"));
    o.line("    let N4 = p.N / 4u;");
    o.line("    let K8 = p.K / 8u;");
    o.line(format!("    let m0 = gid.y * {rows}u;"));
    o.line(format!("    let k0 = gid.x * {cols}u;"));
    o.line("    if (m0 >= p.M || k0 >= p.K) { return; }");
    for i in 0..rows {
        o.line(format!("    let ra{i} = min(m0 + {i}u, p.M - 1u) * N4;"));
    }
    // Column vec4 q covers k0 + 4q .. +4: group k8 = k0/8 + q/2, half q%2.
    for g in 0..cols.div_ceil(8) {
        o.line(format!("    let kg{g} = min(k0 / 8u + {g}u, K8 - 1u);"));
    }
    accumulators(o, rows, q4);
    o.line("    for (var n4 = 0u; n4 < N4; n4++) {");
    o.line("        let n = 4u * n4;");
    for g in 0..cols.div_ceil(8) {
        for t in 0..4 {
            o.line(format!("        let d{t}_{g} = dequant8(n + {t}u, kg{g});"));
        }
    }
    // Columns of w{q}: rows n..n+4 of W at columns 4q..4q+4, so w·x = Σ_t W[n+t]·x[t].
    for q in 0..q4 {
        let (g, h) = (q / 2, q % 2);
        o.line(format!("        let w{q} = mat4x4<f32>(d0_{g}[{h}], d1_{g}[{h}], d2_{g}[{h}], d3_{g}[{h}]);"));
    }
    for i in 0..rows {
        let upd: Vec<String> = (0..q4).map(|q| format!("c{i}_{q} += w{q} * x;")).collect();
        o.line(format!("        {{ let x = inp[ra{i} + n4]; {} }}", upd.join(" ")));
    }
    o.line("    }");
    store_scalar(o, rows, q4, "p.K", "k0");
    o.line("}");
}
