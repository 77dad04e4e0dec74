//! An adapter on the GPU: A and B of every adapted layer, looked up by (layer, target).

use super::{Adapter, LoraTensor, Target};
use crate::ops::lora::LoraDims;
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
    /// Same order as `adapter.tensors`.
    pub tensors: Vec<GpuLora>,
    /// by_layer[layer][target as index] → index into `tensors`.
    by_layer: Vec<[Option<usize>; 7]>,
}

impl GpuAdapter {
    pub fn upload(ctx: &GpuContext, adapter: Adapter, n_layers: usize) -> Result<Self> {
        let mut by_layer = vec![[None; 7]; n_layers];
        let tensors = adapter
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                by_layer[t.layer][t.target as usize] = Some(i);
                Ok(GpuLora { a: ctx.upload_f32(&t.a)?, b: ctx.upload_f32(&t.b)?, rank: t.rank, d_in: t.d_in, d_out: t.d_out, scale: t.scale })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GpuAdapter { adapter, tensors, by_layer })
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
        for (t, g) in self.adapter.tensors.iter_mut().zip(&self.tensors) {
            let LoraTensor { a, b, .. } = t;
            *a = ctx.read_f32_prefix(&g.a, a.len()).await?;
            *b = ctx.read_f32_prefix(&g.b, b.len()).await?;
        }
        Ok(&self.adapter)
    }
}
