// Token embedding lookup from an f32 table's rows (a tied lm_head, or a part of it): out(N, C)
// = scale·wte[ids[n] − first_row] for the N tokens whose row the part holds (rows first_row
// .. first_row + V); the others are left to their part's launch. The ids are f32 values
// (exact below 2²⁴), as the quantized formats' gather (shaders/matmul/gather.wgsl) reads them.

struct Params {
    N: u32,
    C: u32,
    V: u32,
    first_row: u32,
    scale: f32,
}

@group(0) @binding(0) var<storage, read> ids: array<f32>;
@group(0) @binding(1) var<storage, read> wte: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(256)
fn embedding_forward(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.N * p.C) { return; }
    let n = i / p.C;
    let c = i % p.C;
    let id = u32(ids[n]);
    if (id < p.first_row || id - p.first_row >= p.V) { return; }
    out[i] = p.scale * wte[(id - p.first_row) * p.C + c];
}
