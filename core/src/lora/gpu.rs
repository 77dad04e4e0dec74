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
    /// A fused layer's parts (Phi-3's q, k, v of qkv_proj): each its target and its rows of B.
    pub parts: Vec<(Target, GpuBuffer)>,
}

impl GpuLora {
    pub fn dims(&self, m: usize) -> LoraDims {
        LoraDims { m, d_in: self.d_in, d_out: self.d_out, rank: self.rank, scale: self.scale, accumulate: false, dropout: (0.0, 0) }
    }

    /// The dims of part `target`'s rows of a fused layer.
    pub fn part_dims(&self, m: usize, rows: usize) -> LoraDims {
        LoraDims { d_out: rows, ..self.dims(m) }
    }
}

/// How a base layer is adapted: by its own tensor, or as part `part` of a fused one
/// (`first`: it computes x·Aᵀ; `last`: its backward finishes dA and dx).
#[derive(Clone, Copy, Debug)]
pub struct LoraUse {
    pub index: usize,
    pub part: Option<FusedPart>,
}

#[derive(Clone, Copy, Debug)]
pub struct FusedPart {
    pub index: usize,
    pub rows: usize,
    pub first: bool,
    pub last: bool,
}

/// Part `i` of arena tensor `tensor`'s B (or dB) rows for each part of a fused `target`.
pub(crate) fn fused_part_views(ctx: &GpuContext, arena: &Arena, b_part: usize, target: Target, rank: usize, cfg: &crate::model::Config) -> Result<Vec<(Target, GpuBuffer)>> {
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    target
        .parts()
        .iter()
        .map(|&p| {
            let rows = p.rows_in(target, cfg);
            let what = format!("the LoRA rows of {} in {}", p.name(), target.name());
            Ok((p, arena.sub_view(b_part, (rows.start * rank * 4) as u64, (rows.len() * rank * 4) as u64, align, &what)?))
        })
        .collect()
}

pub struct GpuAdapter {
    pub adapter: Adapter,
    /// Same order as `adapter.tensors`; their A and B are views of `params`.
    pub tensors: Vec<GpuLora>,
    /// A then B of every tensor in one buffer ([`lora_parts`] order): AdamW updates them
    /// in one launch and a download is one readback.
    pub params: Arena,
    /// by_layer[layer][target as index] → index into `tensors`.
    by_layer: Vec<[Option<usize>; Target::COUNT]>,
}

impl GpuAdapter {
    pub fn upload(ctx: &GpuContext, adapter: Adapter, cfg: &crate::model::Config) -> Result<Self> {
        let params = ctx.alloc_arena(&lora_parts(&adapter))?;
        let mut by_layer = vec![[None; Target::COUNT]; cfg.n_layers];
        let mut tensors = Vec::with_capacity(adapter.tensors.len());
        for (i, t) in adapter.tensors.iter().enumerate() {
            by_layer[t.layer][t.target as usize] = Some(i);
            let (a, b) = (params.view(2 * i), params.view(2 * i + 1));
            ctx.write_f32(&a, &t.a);
            ctx.write_f32(&b, &t.b);
            let parts = if t.target.is_fused() { fused_part_views(ctx, &params, 2 * i + 1, t.target, t.rank, cfg)? } else { Vec::new() };
            tensors.push(GpuLora { a, b, rank: t.rank, d_in: t.d_in, d_out: t.d_out, scale: t.scale, parts });
        }
        Ok(GpuAdapter { adapter, tensors, params, by_layer })
    }

    pub fn index(&self, layer: usize, target: Target) -> Option<usize> {
        self.by_layer[layer][target as usize]
    }

    /// How base layer `target` of `layer` is adapted, if at all: its own tensor, or its part
    /// of a fused one.
    pub fn lora_use(&self, layer: usize, target: Target) -> Option<LoraUse> {
        if let Some(index) = self.index(layer, target) {
            return Some(LoraUse { index, part: None });
        }
        let fused = target.fused();
        let index = self.index(layer, fused).filter(|_| fused != target)?;
        let parts = fused.parts();
        let p = parts.iter().position(|&t| t == target).expect("a part of its fused layer");
        let rows = self.tensors[index].parts[p].1.len_words() / self.tensors[index].rank;
        Some(LoraUse { index, part: Some(FusedPart { index: p, rows, first: p == 0, last: p + 1 == parts.len() }) })
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
