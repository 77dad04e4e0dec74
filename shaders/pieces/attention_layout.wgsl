// Where attention's tensors keep a token's head and a query row's stats (attention.wgsl and
// attention_flash.wgsl; the includer's Params have T, NH and HS).

// Offset of head `h` of token (b, t) in a (B, T, heads, HS) tensor.
fn row(b: u32, t: u32, heads: u32, h: u32) -> u32 {
    return ((b * p.T + t) * heads + h) * p.HS;
}

// Index of (b, h, t) in stats (B, NH, T, 2), times 2.
fn stat(b: u32, h: u32, t: u32) -> u32 {
    return ((b * p.NH + h) * p.T + t) * 2u;
}
