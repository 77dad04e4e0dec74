// Reads of GGUF blocks from w: array<u32> (Q4_0, Q4_1, Q8_0), included by their matmul files.

// The u16 at an even byte address of w.
fn read_u16(addr: u32) -> u32 {
    return (w[addr / 4u] >> (8u * (addr % 4u))) & 0xFFFFu;
}

// The u32 at an even (not necessarily 4-aligned) byte address of w: GGUF blocks of 18, 20 or
// 34 bytes start on 2-byte boundaries.
fn read_u32(addr: u32) -> u32 {
    let i = addr / 4u;
    if (addr % 4u == 0u) { return w[i]; }
    return (w[i] >> 16u) | (w[i + 1u] << 16u);
}

fn half_at(addr: u32) -> f32 {
    return unpack2x16float(read_u16(addr)).x;
}
