// Values a kernel holds in registers as vectors and matrices, read by selects: never an array
// indexed by a loop, which a driver that does not unroll the loop keeps in memory (each load
// then waiting for the one before it to be stored; see matmul_tiled.wgsl's Staged).

// Column n (< 4) of m.
fn column_of(m: mat4x4<f32>, n: u32) -> vec4<f32> {
    return select(select(m[3], m[2], n == 2u), select(m[1], m[0], n == 0u), n < 2u);
}

// Value k (< 8) of eight held as lo, then hi.
fn one_of_eight(lo: vec4<f32>, hi: vec4<f32>, k: u32) -> f32 {
    return select(hi[k % 4u], lo[k % 4u], k < 4u);
}
