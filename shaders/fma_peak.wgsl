// The GPU's f32 rate with no memory traffic (`hearth bench ops`' "peak fma" row): what the
// matmuls' GFLOP/s are measured against on the machine itself, so that a figure low by the
// same factor as every kernel's (clocks held down, a slow driver path) reads as the GPU's and
// not the kernels'. Each of N invocations runs 32 independent chains (eight vec4s) of
// x ← fma(x, m, c) for `iters` rounds, from seeds that depend on its index, and writes their
// sum: 64 FLOPs per round. m and c come from the uniform, so no compiler can fold the chains.

struct Params {
    N: u32,
    iters: u32,
    m: f32,
    c: f32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(256)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.N) { return; }
    // chain 4·k + l starts at s + (4·k + l) / 32
    let s = f32(i % 1024u) / 1024.0;
    let lanes = vec4<f32>(0.0, 1.0, 2.0, 3.0) / 32.0;
    let m = vec4<f32>(p.m);
    let c = vec4<f32>(p.c);
    // (named, not an array: a driver that does not unroll a loop over an array keeps it in
    // memory, and the row would time that)
    var x0 = vec4<f32>(s) + lanes;
    var x1 = vec4<f32>(s + 4.0 / 32.0) + lanes;
    var x2 = vec4<f32>(s + 8.0 / 32.0) + lanes;
    var x3 = vec4<f32>(s + 12.0 / 32.0) + lanes;
    var x4 = vec4<f32>(s + 16.0 / 32.0) + lanes;
    var x5 = vec4<f32>(s + 20.0 / 32.0) + lanes;
    var x6 = vec4<f32>(s + 24.0 / 32.0) + lanes;
    var x7 = vec4<f32>(s + 28.0 / 32.0) + lanes;
    for (var r = 0u; r < p.iters; r++) {
        x0 = fma(x0, m, c);
        x1 = fma(x1, m, c);
        x2 = fma(x2, m, c);
        x3 = fma(x3, m, c);
        x4 = fma(x4, m, c);
        x5 = fma(x5, m, c);
        x6 = fma(x6, m, c);
        x7 = fma(x7, m, c);
    }
    out[i] = dot((x0 + x1) + (x2 + x3) + ((x4 + x5) + (x6 + x7)), vec4<f32>(1.0));
}
