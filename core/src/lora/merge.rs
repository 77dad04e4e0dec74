//! Merging an adapter into the base weights: W' = W + scale·B·A.

use super::{Adapter, Target};
use crate::model::weights::{HostWeights, Matrix, MatrixData};

/// Adds every adapter tensor into its base matrix (dequantized to f32 first); a fused
/// layer's (Phi-3's qkv_proj) rows of B go to the matrices it was split into. The caller has
/// checked the adapter's shapes ([`Adapter::check_against`]).
pub fn merge_into(w: &mut HostWeights, a: &Adapter) {
    for t in &a.tensors {
        let layer = &mut w.layers[t.layer];
        let mut row0 = 0;
        for &part in t.target.parts() {
            let m = match part {
                Target::Q => &mut layer.q,
                Target::K => &mut layer.k,
                Target::V => &mut layer.v,
                Target::O => &mut layer.o,
                Target::Gate => &mut layer.gate,
                Target::Up => &mut layer.up,
                Target::Down => &mut layer.down,
                Target::Qkv | Target::GateUp => unreachable!("parts are single layers"),
            };
            let mut data = m.to_f32();
            for o in 0..m.rows {
                let b_row = &t.b[(row0 + o) * t.rank..][..t.rank];
                let row = &mut data[o * t.d_in..][..t.d_in];
                for (k, &bk) in b_row.iter().enumerate() {
                    let s = t.scale * bk;
                    if s == 0.0 {
                        continue;
                    }
                    for (x, &ak) in row.iter_mut().zip(&t.a[k * t.d_in..][..t.d_in]) {
                        *x += s * ak;
                    }
                }
            }
            row0 += m.rows;
            *m = Matrix { name: m.name.clone(), rows: m.rows, cols: m.cols, data: MatrixData::F32(data) };
        }
    }
}
