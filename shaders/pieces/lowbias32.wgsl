// Chris Wellons' lowbias32: a 32-bit integer hash (ops::cpu::lowbias32 on the host), for
// random numbers drawn from a counter where the GPU and the host must draw the same.

fn lowbias32(v: u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    return x ^ (x >> 16u);
}
