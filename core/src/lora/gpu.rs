//! An adapter on the GPU: A and B of every adapted layer, looked up by (layer, target).

use super::{Adapter, LoraTensor, Target};
use crate::ops::lora::LoraDims;
use crate::gpu::Arena;
use crate::{GpuBuffer, GpuContext, Result};

pub struct GpuLora {
    pub a: GpuBuffer, // (r, in)
    pub b: GpuBuffer, // (out, r)
    pub rank: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub scale: f32,
}

impl GpuLora {
    pub fn dims(&self, m: usize) -> LoraDims {
        LoraDims { m, d_in: self.d_in, d_out: self.d_out, rank: self.rank, scale: self.scale, accumulate: false }
    }
}

pub struct GpuAdapter {
    pub adapter: Adapter,
    /// Same order as `adapter.tensors`; their A and B are views of `params`.
    pub tensors: Vec<GpuLora>,
    /// A then B of every tensor in one buffer ([`lora_parts`] order): AdamW updates them
    /// in one launch and a download is one readback.
    pub params: Arena,
    /// by_layer[layer][target as index] → index into `tensors`.
    by_layer: Vec<[Option<usize>; 7]>,
}

impl GpuAdapter {
    pub fn upload(ctx: &GpuContext, adapter: Adapter, n_layers: usize) -> Result<Self> {
        let params = ctx.alloc_arena(&lora_parts(&adapter))?;
        let mut by_layer = vec![[None; 7]; n_layers];
        let mut tensors = Vec::with_capacity(adapter.tensors.len());
        for (i, t) in adapter.tensors.iter().enumerate() {
            by_layer[t.layer][t.target as usize] = Some(i);
            let (a, b) = (params.view(2 * i), params.view(2 * i + 1));
            ctx.write_f32(&a, &t.a);
            ctx.write_f32(&b, &t.b);
            tensors.push(GpuLora { a, b, rank: t.rank, d_in: t.d_in, d_out: t.d_out, scale: t.scale });
        }
        Ok(GpuAdapter { adapter, tensors, params, by_layer })
    }

    pub fn index(&self, layer: usize, target: Target) -> Option<usize> {
        self.by_layer[layer][target as usize]
    }

    pub fn get(&self, layer: usize, target: Target) -> Option<&GpuLora> {
        self.index(layer, target).map(|i| &self.tensors[i])
    }

    /// The largest rank (scratch buffers are sized by it).
    pub fn max_rank(&self) -> usize {
        self.tensors.iter().map(|t| t.rank).max().unwrap_or(0)
    }

    /// Copies the GPU's A and B back into the host adapter and returns it.
    pub async fn download(&mut self, ctx: &GpuContext) -> Result<&Adapter> {
        let mut parts = self.params.read_parts(ctx).await?.into_iter();
        for t in &mut self.adapter.tensors {
            let LoraTensor { a, b, .. } = t;
            (*a, *b) = (parts.next().expect("A"), parts.next().expect("B"));
        }
        Ok(&self.adapter)
    }
}

/// The f32 counts of an adapter's A and B, tensor by tensor: the parts of its arenas (the
/// weights, their gradients, the optimizer's moments).
pub fn lora_parts(adapter: &Adapter) -> Vec<usize> {
    adapter.tensors.iter().flat_map(|t| [t.rank * t.d_in, t.d_out * t.rank]).collect()
}
