// A strided f32 GEMM with workgroup-memory tiles, the variant for real GPUs (and for any
// shape the register-blocked matmul.wgsl does not take):
//
//   c[z](M,N) = beta·c[z] + alpha · Σ_r A(i,r)·B(j,r)
//   A(i,r) = a[z·a_batch + i·a_si + r·a_sr],  B(j,r) = b[z·b_batch + j·b_sj + r·b_sr]
//
// The launcher expresses y = x·Wᵀ, dx = dy·W and dW = dyᵀ·x through the strides.
// Each invocation computes a 4×4 block; a workgroup covers (4·WG)×(4·WG) outputs and stages
// TILE_R reduction steps of A and B in workgroup memory per iteration.

struct Params {
    M: u32,
    N: u32,
    R: u32,
    alpha: f32,
    beta: f32,
    a_si: u32,
    a_sr: u32,
    b_sj: u32,
    b_sr: u32,
    a_batch: u32,
    b_batch: u32,
    c_batch: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

override WG: u32 = 16u;     // invocations per side of the workgroup
override TILE_R: u32 = 16u; // reduction steps staged per iteration
const T: u32 = 4u;          // outputs per invocation per side

var<workgroup> tile_a: array<f32, 64u * TILE_R>; // (4·WG) rows × TILE_R; sized for WG ≤ 16
var<workgroup> tile_b: array<f32, 64u * TILE_R>;

@compute @workgroup_size(WG, WG, 1)
fn matmul_strided(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let side = T * WG;
    let i0 = wid.y * side;
    let j0 = wid.x * side;
    let a_off = wid.z * p.a_batch;
    let b_off = wid.z * p.b_batch;
    let flat = lid.y * WG + lid.x;
    let lanes = WG * WG;
    var acc: array<array<f32, 4>, 4>;
    for (var r0 = 0u; r0 < p.R; r0 += TILE_R) {
        for (var e = flat; e < side * TILE_R; e += lanes) {
            let row = e / TILE_R;
            let r = r0 + e % TILE_R;
            let i = i0 + row;
            let j = j0 + row;
            var va = 0.0;
            var vb = 0.0;
            if (i < p.M && r < p.R) { va = a[a_off + i * p.a_si + r * p.a_sr]; }
            if (j < p.N && r < p.R) { vb = b[b_off + j * p.b_sj + r * p.b_sr]; }
            tile_a[e] = va;
            tile_b[e] = vb;
        }
        workgroupBarrier();
        for (var r = 0u; r < TILE_R; r++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var t = 0u; t < T; t++) {
                av[t] = tile_a[(lid.y * T + t) * TILE_R + r];
                bv[t] = tile_b[(lid.x * T + t) * TILE_R + r];
            }
            for (var ti = 0u; ti < T; ti++) {
                for (var tj = 0u; tj < T; tj++) {
                    acc[ti][tj] += av[ti] * bv[tj];
                }
            }
        }
        workgroupBarrier();
    }
    for (var ti = 0u; ti < T; ti++) {
        let i = i0 + lid.y * T + ti;
        for (var tj = 0u; tj < T; tj++) {
            let j = j0 + lid.x * T + tj;
            if (i < p.M && j < p.N) {
                let idx = wid.z * p.c_batch + i * p.N + j;
                var v = p.alpha * acc[ti][tj];
                if (p.beta != 0.0) { v += p.beta * c[idx]; }
                c[idx] = v;
            }
        }
    }
}
