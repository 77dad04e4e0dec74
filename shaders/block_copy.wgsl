// Copies a block of ROWS × COLS values between two row-major matrices of different widths:
// dst[r · dst_stride + dst_col + c] = src[r · src_stride + src_col + c]. One launch replaces
// a copy per row, e.g. a part of a split lm_head's logits into its columns of the full row.

struct Params {
    rows: u32,
    cols: u32,
    src_stride: u32,
    src_col: u32,
    dst_stride: u32,
    dst_col: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(256)
fn block_copy(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    dst[r * p.dst_stride + p.dst_col + c] = src[r * p.src_stride + p.src_col + c];
}
