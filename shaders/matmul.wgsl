// f32 matmul in the nn.Linear layout, register-blocked for software adapters (lavapipe,
// SwiftShader): each invocation computes a 32×16 block of outputs from vec4 loads along the
// reduction, with no workgroup memory. On such adapters every buffer load costs a loop over
// the SIMD lanes, so the FMAs each loaded value feeds decide the speed (shared/TESTING.md).
//
//   matmul_forward:         c(M,N) = beta·c + alpha · a(M,K) · b(N,K)ᵀ     (y = x·Wᵀ)
//   matmul_backward_input:  c(M,K) = beta·c + alpha · a(M,N) · b(N,K)      (dx = dy·W)
//   matmul_backward_weight: c(N,K) = beta·c + alpha · a(M,N)ᵀ · b(M,K)     (dW = dyᵀ·x)
//
// Requirements (checked by the launcher): the dimensions read as vec4 are multiples of 4:
// K for the forward; N and K for both backward kernels. Other sizes go to matmul_tiled.
// A batch index (workgroup z) offsets a and c by whole matrices, b only when b_batched is 1.

struct Params {
    M: u32,
    N: u32,
    K: u32,
    alpha: f32,
    beta: f32,
    b_batched: u32,
}

@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c: array<vec4<f32>>;
@group(1) @binding(0) var<uniform> p: Params;

const TM: u32 = 32u; // output rows per invocation
const TN: u32 = 16u; // output columns per invocation (4 vec4)
override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;

// Writes a 32×16 block of accumulators to c (row-major, `cols4` vec4 per row), applying
// alpha and beta. Columns are always whole vec4 here because `cols` is a multiple of 4.
fn store_block(acc: ptr<function, array<array<vec4<f32>, 4>, 32>>, c_off: u32, row0: u32,
               rows: u32, col4: u32, cols4: u32) {
    for (var i = 0u; i < TM; i++) {
        let r = row0 + i;
        if (r >= rows) { break; }
        for (var j = 0u; j < 4u; j++) {
            let cj = col4 + j;
            if (cj < cols4) {
                let idx = c_off + r * cols4 + cj;
                var v = p.alpha * (*acc)[i][j];
                if (p.beta != 0.0) { v += p.beta * c[idx]; }
                c[idx] = v;
            }
        }
    }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let K4 = p.K / 4u;
    let row0 = gid.y * TM;
    let n0 = gid.x * TN;
    if (row0 >= p.M || n0 >= p.N) { return; }
    let a_off = gid.z * p.M * K4;
    let b_off = gid.z * p.b_batched * p.N * K4;
    var acc: array<array<vec4<f32>, 4>, 32>;
    var w: array<vec4<f32>, 16>;
    for (var k4 = 0u; k4 < K4; k4++) {
        for (var j = 0u; j < TN; j++) {
            w[j] = b[b_off + min(n0 + j, p.N - 1u) * K4 + k4];
        }
        for (var i = 0u; i < TM; i++) {
            let x = a[a_off + min(row0 + i, p.M - 1u) * K4 + k4];
            for (var j = 0u; j < 4u; j++) {
                acc[i][j] += vec4<f32>(dot(x, w[4u * j]), dot(x, w[4u * j + 1u]),
                                       dot(x, w[4u * j + 2u]), dot(x, w[4u * j + 3u]));
            }
        }
    }
    // N need not be a multiple of 4 here: store the last partial vec4 element-wise.
    if (n0 + TN <= p.N && p.N % 4u == 0u) {
        store_block(&acc, gid.z * p.M * (p.N / 4u), row0, p.M, n0 / 4u, p.N / 4u);
    } else {
        store_forward_ragged(&acc, gid.z * p.M * p.N, row0, n0);
    }
}

// Element-wise store for a forward block whose columns run past N or whose rows are not
// vec4-aligned (N % 4 != 0): reads and writes c through scalar lanes of its vec4 view.
fn store_forward_ragged(acc: ptr<function, array<array<vec4<f32>, 4>, 32>>, c_off: u32,
                        row0: u32, n0: u32) {
    for (var i = 0u; i < TM; i++) {
        let r = row0 + i;
        if (r >= p.M) { break; }
        for (var j = 0u; j < TN; j++) {
            let n = n0 + j;
            if (n < p.N) {
                let flat = c_off + r * p.N + n;
                var v = p.alpha * (*acc)[i][j / 4u][j % 4u];
                if (p.beta != 0.0) { v += p.beta * c[flat / 4u][flat % 4u]; }
                c[flat / 4u][flat % 4u] = v;
            }
        }
    }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let N4 = p.N / 4u;
    let K4 = p.K / 4u;
    let row0 = gid.y * TM;
    let k0 = gid.x * TN;
    if (row0 >= p.M || k0 >= p.K) { return; }
    let a_off = gid.z * p.M * N4;
    let b_off = gid.z * p.b_batched * p.N * K4;
    var acc: array<array<vec4<f32>, 4>, 32>;
    var w: array<vec4<f32>, 16>; // w[4·r + j]: row n+r of b, columns k0+4j .. k0+4j+3
    for (var n4 = 0u; n4 < N4; n4++) {
        for (var r = 0u; r < 4u; r++) {
            for (var j = 0u; j < 4u; j++) {
                w[4u * r + j] = b[b_off + (4u * n4 + r) * K4 + min(k0 / 4u + j, K4 - 1u)];
            }
        }
        for (var i = 0u; i < TM; i++) {
            let d = a[a_off + min(row0 + i, p.M - 1u) * N4 + n4];
            for (var j = 0u; j < 4u; j++) {
                acc[i][j] += d.x * w[j] + d.y * w[4u + j] + d.z * w[8u + j] + d.w * w[12u + j];
            }
        }
    }
    store_block(&acc, gid.z * p.M * K4, row0, p.M, k0 / 4u, K4);
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    let N4 = p.N / 4u;
    let K4 = p.K / 4u;
    let n0 = gid.y * TM;
    let k0 = gid.x * TN;
    if (n0 >= p.N || k0 >= p.K) { return; }
    let a_off = gid.z * p.M * N4;
    let b_off = gid.z * p.M * K4;
    var acc: array<array<vec4<f32>, 4>, 32>;
    var x: array<vec4<f32>, 16>; // x[4·r + j]: row m+r of b, columns k0+4j .. k0+4j+3
    for (var m = 0u; m < p.M; m += 4u) {
        for (var r = 0u; r < 4u; r++) {
            let live = m + r < p.M;
            let row = min(m + r, p.M - 1u);
            for (var j = 0u; j < 4u; j++) {
                let v = b[b_off + row * K4 + min(k0 / 4u + j, K4 - 1u)];
                x[4u * r + j] = select(vec4<f32>(0.0), v, live);
            }
        }
        for (var i4 = 0u; i4 < TM / 4u; i4++) {
            let col4 = min(n0 / 4u + i4, N4 - 1u);
            var d: array<vec4<f32>, 4>; // d[r]: dy[m+r, n0+4·i4 .. +3]
            for (var r = 0u; r < 4u; r++) {
                d[r] = select(vec4<f32>(0.0), a[a_off + min(m + r, p.M - 1u) * N4 + col4], m + r < p.M);
            }
            for (var e = 0u; e < 4u; e++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[4u * i4 + e][j] += d[0][e] * x[j] + d[1][e] * x[4u + j]
                                         + d[2][e] * x[8u + j] + d[3][e] * x[12u + j];
                }
            }
        }
    }
    store_block(&acc, gid.z * p.N * K4, n0, p.N, k0 / 4u, K4);
}
