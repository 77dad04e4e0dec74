// Token embeddings gathered from a quantized weight's rows (a tied lm_head holds the token
// embeddings): out(M, K) = alpha·W[ids], with the M token ids as f32 values in inp (exact
// below 2²⁴). W holds rows first_row .. first_row + N of the table (a part of a split
// lm_head); a token whose row lies in another part is left to that part's launch. One
// invocation per 8 values, decoded by the format's `dequant8` (exactly as the host
// dequantizes them, up to a fused multiply-add).

@compute @workgroup_size(64)
fn embedding_gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = gid.x + gid.y * nwg.x * 64u;
    let per_row = p.K / 8u;
    if (e >= p.M * per_row) { return; }
    let i = e / per_row;
    let k8 = e % per_row;
    let id = u32(inp[i / 4u][i % 4u]);
    if (id < p.first_row || id - p.first_row >= p.N) { return; }
    let v = dequant8(id - p.first_row, k8);
    let o = i * p.K + 8u * k8;
    st4(o, 0u, 4u, v[0]);
    st4(o + 4u, 0u, 4u, v[1]);
}
