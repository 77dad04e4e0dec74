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

// acc + (w0·x, w1·x, w2·x, w3·x) column by column, as explicit FMAs.
fn block4(acc: mat4x4<f32>, x: vec4<f32>, w0: mat4x4<f32>, w1: mat4x4<f32>, w2: mat4x4<f32>, w3: mat4x4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(mv(acc[0], x, w0), mv(acc[1], x, w1), mv(acc[2], x, w2), mv(acc[3], x, w3));
}

fn mv(acc: vec4<f32>, x: vec4<f32>, w: mat4x4<f32>) -> vec4<f32> {
    return fma(w[3], vec4<f32>(x.w), fma(w[2], vec4<f32>(x.z), fma(w[1], vec4<f32>(x.y), fma(w[0], vec4<f32>(x.x), acc))));
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let K4 = p.K / 4u;
    let row0 = gid.y * TM;
    let n0 = gid.x * TN;
    if (row0 >= p.M || n0 >= p.N) { return; }
    let a_off = gid.z * p.M * K4;
    let b_off = gid.z * p.b_batched * p.N * K4;
    let last = p.M - 1u;

    var acc0 = mat4x4<f32>();
    var acc1 = mat4x4<f32>();
    var acc2 = mat4x4<f32>();
    var acc3 = mat4x4<f32>();
    var acc4 = mat4x4<f32>();
    var acc5 = mat4x4<f32>();
    var acc6 = mat4x4<f32>();
    var acc7 = mat4x4<f32>();
    var acc8 = mat4x4<f32>();
    var acc9 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    var acc12 = mat4x4<f32>();
    var acc13 = mat4x4<f32>();
    var acc14 = mat4x4<f32>();
    var acc15 = mat4x4<f32>();
    var acc16 = mat4x4<f32>();
    var acc17 = mat4x4<f32>();
    var acc18 = mat4x4<f32>();
    var acc19 = mat4x4<f32>();
    var acc20 = mat4x4<f32>();
    var acc21 = mat4x4<f32>();
    var acc22 = mat4x4<f32>();
    var acc23 = mat4x4<f32>();
    var acc24 = mat4x4<f32>();
    var acc25 = mat4x4<f32>();
    var acc26 = mat4x4<f32>();
    var acc27 = mat4x4<f32>();
    var acc28 = mat4x4<f32>();
    var acc29 = mat4x4<f32>();
    var acc30 = mat4x4<f32>();
    var acc31 = mat4x4<f32>();
    let ra0 = a_off + min(row0 + 0u, last) * K4;
    let ra1 = a_off + min(row0 + 1u, last) * K4;
    let ra2 = a_off + min(row0 + 2u, last) * K4;
    let ra3 = a_off + min(row0 + 3u, last) * K4;
    let ra4 = a_off + min(row0 + 4u, last) * K4;
    let ra5 = a_off + min(row0 + 5u, last) * K4;
    let ra6 = a_off + min(row0 + 6u, last) * K4;
    let ra7 = a_off + min(row0 + 7u, last) * K4;
    let ra8 = a_off + min(row0 + 8u, last) * K4;
    let ra9 = a_off + min(row0 + 9u, last) * K4;
    let ra10 = a_off + min(row0 + 10u, last) * K4;
    let ra11 = a_off + min(row0 + 11u, last) * K4;
    let ra12 = a_off + min(row0 + 12u, last) * K4;
    let ra13 = a_off + min(row0 + 13u, last) * K4;
    let ra14 = a_off + min(row0 + 14u, last) * K4;
    let ra15 = a_off + min(row0 + 15u, last) * K4;
    let ra16 = a_off + min(row0 + 16u, last) * K4;
    let ra17 = a_off + min(row0 + 17u, last) * K4;
    let ra18 = a_off + min(row0 + 18u, last) * K4;
    let ra19 = a_off + min(row0 + 19u, last) * K4;
    let ra20 = a_off + min(row0 + 20u, last) * K4;
    let ra21 = a_off + min(row0 + 21u, last) * K4;
    let ra22 = a_off + min(row0 + 22u, last) * K4;
    let ra23 = a_off + min(row0 + 23u, last) * K4;
    let ra24 = a_off + min(row0 + 24u, last) * K4;
    let ra25 = a_off + min(row0 + 25u, last) * K4;
    let ra26 = a_off + min(row0 + 26u, last) * K4;
    let ra27 = a_off + min(row0 + 27u, last) * K4;
    let ra28 = a_off + min(row0 + 28u, last) * K4;
    let ra29 = a_off + min(row0 + 29u, last) * K4;
    let ra30 = a_off + min(row0 + 30u, last) * K4;
    let ra31 = a_off + min(row0 + 31u, last) * K4;
    let rb0 = b_off + min(n0 + 0u, p.N - 1u) * K4;
    let rb1 = b_off + min(n0 + 1u, p.N - 1u) * K4;
    let rb2 = b_off + min(n0 + 2u, p.N - 1u) * K4;
    let rb3 = b_off + min(n0 + 3u, p.N - 1u) * K4;
    let rb4 = b_off + min(n0 + 4u, p.N - 1u) * K4;
    let rb5 = b_off + min(n0 + 5u, p.N - 1u) * K4;
    let rb6 = b_off + min(n0 + 6u, p.N - 1u) * K4;
    let rb7 = b_off + min(n0 + 7u, p.N - 1u) * K4;
    let rb8 = b_off + min(n0 + 8u, p.N - 1u) * K4;
    let rb9 = b_off + min(n0 + 9u, p.N - 1u) * K4;
    let rb10 = b_off + min(n0 + 10u, p.N - 1u) * K4;
    let rb11 = b_off + min(n0 + 11u, p.N - 1u) * K4;
    let rb12 = b_off + min(n0 + 12u, p.N - 1u) * K4;
    let rb13 = b_off + min(n0 + 13u, p.N - 1u) * K4;
    let rb14 = b_off + min(n0 + 14u, p.N - 1u) * K4;
    let rb15 = b_off + min(n0 + 15u, p.N - 1u) * K4;
    for (var k4 = 0u; k4 < K4; k4++) {
        let w0 = transpose(mat4x4<f32>(b[rb0+k4], b[rb1+k4], b[rb2+k4], b[rb3+k4]));
        let w1 = transpose(mat4x4<f32>(b[rb4+k4], b[rb5+k4], b[rb6+k4], b[rb7+k4]));
        let w2 = transpose(mat4x4<f32>(b[rb8+k4], b[rb9+k4], b[rb10+k4], b[rb11+k4]));
        let w3 = transpose(mat4x4<f32>(b[rb12+k4], b[rb13+k4], b[rb14+k4], b[rb15+k4]));
        acc0 = block4(acc0, a[ra0 + k4], w0, w1, w2, w3);
        acc1 = block4(acc1, a[ra1 + k4], w0, w1, w2, w3);
        acc2 = block4(acc2, a[ra2 + k4], w0, w1, w2, w3);
        acc3 = block4(acc3, a[ra3 + k4], w0, w1, w2, w3);
        acc4 = block4(acc4, a[ra4 + k4], w0, w1, w2, w3);
        acc5 = block4(acc5, a[ra5 + k4], w0, w1, w2, w3);
        acc6 = block4(acc6, a[ra6 + k4], w0, w1, w2, w3);
        acc7 = block4(acc7, a[ra7 + k4], w0, w1, w2, w3);
        acc8 = block4(acc8, a[ra8 + k4], w0, w1, w2, w3);
        acc9 = block4(acc9, a[ra9 + k4], w0, w1, w2, w3);
        acc10 = block4(acc10, a[ra10 + k4], w0, w1, w2, w3);
        acc11 = block4(acc11, a[ra11 + k4], w0, w1, w2, w3);
        acc12 = block4(acc12, a[ra12 + k4], w0, w1, w2, w3);
        acc13 = block4(acc13, a[ra13 + k4], w0, w1, w2, w3);
        acc14 = block4(acc14, a[ra14 + k4], w0, w1, w2, w3);
        acc15 = block4(acc15, a[ra15 + k4], w0, w1, w2, w3);
        acc16 = block4(acc16, a[ra16 + k4], w0, w1, w2, w3);
        acc17 = block4(acc17, a[ra17 + k4], w0, w1, w2, w3);
        acc18 = block4(acc18, a[ra18 + k4], w0, w1, w2, w3);
        acc19 = block4(acc19, a[ra19 + k4], w0, w1, w2, w3);
        acc20 = block4(acc20, a[ra20 + k4], w0, w1, w2, w3);
        acc21 = block4(acc21, a[ra21 + k4], w0, w1, w2, w3);
        acc22 = block4(acc22, a[ra22 + k4], w0, w1, w2, w3);
        acc23 = block4(acc23, a[ra23 + k4], w0, w1, w2, w3);
        acc24 = block4(acc24, a[ra24 + k4], w0, w1, w2, w3);
        acc25 = block4(acc25, a[ra25 + k4], w0, w1, w2, w3);
        acc26 = block4(acc26, a[ra26 + k4], w0, w1, w2, w3);
        acc27 = block4(acc27, a[ra27 + k4], w0, w1, w2, w3);
        acc28 = block4(acc28, a[ra28 + k4], w0, w1, w2, w3);
        acc29 = block4(acc29, a[ra29 + k4], w0, w1, w2, w3);
        acc30 = block4(acc30, a[ra30 + k4], w0, w1, w2, w3);
        acc31 = block4(acc31, a[ra31 + k4], w0, w1, w2, w3);
    }
    var acc: array<array<vec4<f32>, 4>, 32>;
    acc[0] = array<vec4<f32>, 4>(acc0[0], acc0[1], acc0[2], acc0[3]);
    acc[1] = array<vec4<f32>, 4>(acc1[0], acc1[1], acc1[2], acc1[3]);
    acc[2] = array<vec4<f32>, 4>(acc2[0], acc2[1], acc2[2], acc2[3]);
    acc[3] = array<vec4<f32>, 4>(acc3[0], acc3[1], acc3[2], acc3[3]);
    acc[4] = array<vec4<f32>, 4>(acc4[0], acc4[1], acc4[2], acc4[3]);
    acc[5] = array<vec4<f32>, 4>(acc5[0], acc5[1], acc5[2], acc5[3]);
    acc[6] = array<vec4<f32>, 4>(acc6[0], acc6[1], acc6[2], acc6[3]);
    acc[7] = array<vec4<f32>, 4>(acc7[0], acc7[1], acc7[2], acc7[3]);
    acc[8] = array<vec4<f32>, 4>(acc8[0], acc8[1], acc8[2], acc8[3]);
    acc[9] = array<vec4<f32>, 4>(acc9[0], acc9[1], acc9[2], acc9[3]);
    acc[10] = array<vec4<f32>, 4>(acc10[0], acc10[1], acc10[2], acc10[3]);
    acc[11] = array<vec4<f32>, 4>(acc11[0], acc11[1], acc11[2], acc11[3]);
    acc[12] = array<vec4<f32>, 4>(acc12[0], acc12[1], acc12[2], acc12[3]);
    acc[13] = array<vec4<f32>, 4>(acc13[0], acc13[1], acc13[2], acc13[3]);
    acc[14] = array<vec4<f32>, 4>(acc14[0], acc14[1], acc14[2], acc14[3]);
    acc[15] = array<vec4<f32>, 4>(acc15[0], acc15[1], acc15[2], acc15[3]);
    acc[16] = array<vec4<f32>, 4>(acc16[0], acc16[1], acc16[2], acc16[3]);
    acc[17] = array<vec4<f32>, 4>(acc17[0], acc17[1], acc17[2], acc17[3]);
    acc[18] = array<vec4<f32>, 4>(acc18[0], acc18[1], acc18[2], acc18[3]);
    acc[19] = array<vec4<f32>, 4>(acc19[0], acc19[1], acc19[2], acc19[3]);
    acc[20] = array<vec4<f32>, 4>(acc20[0], acc20[1], acc20[2], acc20[3]);
    acc[21] = array<vec4<f32>, 4>(acc21[0], acc21[1], acc21[2], acc21[3]);
    acc[22] = array<vec4<f32>, 4>(acc22[0], acc22[1], acc22[2], acc22[3]);
    acc[23] = array<vec4<f32>, 4>(acc23[0], acc23[1], acc23[2], acc23[3]);
    acc[24] = array<vec4<f32>, 4>(acc24[0], acc24[1], acc24[2], acc24[3]);
    acc[25] = array<vec4<f32>, 4>(acc25[0], acc25[1], acc25[2], acc25[3]);
    acc[26] = array<vec4<f32>, 4>(acc26[0], acc26[1], acc26[2], acc26[3]);
    acc[27] = array<vec4<f32>, 4>(acc27[0], acc27[1], acc27[2], acc27[3]);
    acc[28] = array<vec4<f32>, 4>(acc28[0], acc28[1], acc28[2], acc28[3]);
    acc[29] = array<vec4<f32>, 4>(acc29[0], acc29[1], acc29[2], acc29[3]);
    acc[30] = array<vec4<f32>, 4>(acc30[0], acc30[1], acc30[2], acc30[3]);
    acc[31] = array<vec4<f32>, 4>(acc31[0], acc31[1], acc31[2], acc31[3]);
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
