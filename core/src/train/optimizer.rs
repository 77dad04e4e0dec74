//! AdamW over the adapter's A and B, with global gradient-norm clipping, on the GPU. The
//! weights, their gradients and the two moments are arenas with one layout (`LoraLayout`),
//! so the gradient norm and the update each run as one launch over all of them (one per
//! binding-limit-sized chunk of a very large adapter), and a checkpoint reads each moment
//! back at once.

use crate::gpu::Arena;
use crate::lora::gpu::GpuAdapter;
use crate::ops::adamw::{adamw_update, AdamwConfig};
use crate::ops::grad_norm::grad_norm;
use crate::{Error, GpuBuffer, GpuContext, Result};

pub struct Optimizer {
    pub cfg: AdamwConfig,
    /// 0: no clipping.
    pub max_grad_norm: f32,
    /// Steps taken (AdamW's bias correction counts from 1).
    pub steps: u32,
    /// The first and second moments of A and B of every adapter tensor, laid out as the
    /// adapter's weights.
    m: Arena,
    v: Arena,
    /// The moments' arena part of each value of the adapter's order (A then B of each
    /// tensor): checkpoints keep that order.
    arena_order: Vec<usize>,
    clip: GpuBuffer, // (2): ‖g‖, clip factor
    sums: GpuBuffer, // grad_norm's PARTS per chunk
}

impl Optimizer {
    pub fn new(ctx: &GpuContext, adapter: &GpuAdapter, cfg: AdamwConfig, max_grad_norm: f32) -> Result<Self> {
        let parts = &adapter.layout.sizes;
        let (m, v) = (ctx.alloc_arena(parts)?, ctx.alloc_arena(parts)?);
        let chunks = chunks(ctx, &m).len();
        let arena_order = adapter.layout.arena_order();
        Ok(Optimizer { cfg, max_grad_norm, steps: 0, m, v, arena_order, clip: ctx.alloc_f32(2)?, sums: ctx.alloc_f32(crate::ops::grad_norm::PARTS * chunks)? })
    }

    /// Clips the gradients to max_grad_norm as a whole, then one AdamW step at `lr`.
    /// `grads` has the adapter's layout. Returns the gradient norm before clipping.
    pub async fn step(&mut self, ctx: &GpuContext, adapter: &GpuAdapter, grads: &Arena, lr: f32) -> Result<f32> {
        let g = chunks(ctx, grads);
        let list: Vec<(&GpuBuffer, usize)> = g.iter().map(|c| (c, c.len_words())).collect();
        grad_norm(ctx, &self.clip, &self.sums, &list, self.max_grad_norm)?;
        self.steps += 1;
        let cfg = AdamwConfig { lr, ..self.cfg };
        // The gaps between the parts are zero in all four arenas, and AdamW keeps them zero.
        let (p, m, v) = (chunks(ctx, &adapter.params), chunks(ctx, &self.m), chunks(ctx, &self.v));
        for (((param, grad), m), v) in p.iter().zip(&g).zip(&m).zip(&v) {
            adamw_update(ctx, param, m, v, grad, &self.clip, grad.len_words(), self.steps, &cfg)?;
        }
        let norm = ctx.read_f32_prefix(&self.clip, 1).await?[0];
        Ok(norm)
    }

    /// (m, v) of A and B of every tensor, in the adapter's order, for a checkpoint.
    pub async fn moments(&self, ctx: &GpuContext) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let (mut m, mut v) = (self.m.read_parts(ctx).await?, self.v.read_parts(ctx).await?);
        Ok(self.arena_order.iter().map(|&p| (std::mem::take(&mut m[p]), std::mem::take(&mut v[p]))).collect())
    }

    /// Restores what [`Optimizer::moments`] returned.
    pub fn set_moments(&mut self, ctx: &GpuContext, moments: &[(Vec<f32>, Vec<f32>)], steps: u32) -> Result<()> {
        if moments.len() != self.m.views.len() {
            return Err(Error::Shape(format!("the checkpoint holds {} optimizer tensors, this adapter needs {}", moments.len(), self.m.views.len())));
        }
        for (&p, (hm, hv)) in self.arena_order.iter().zip(moments) {
            let (m, v) = (&self.m.views[p], &self.v.views[p]);
            if hm.len() != m.len_words() || hv.len() != v.len_words() {
                return Err(Error::Shape(format!("an optimizer tensor holds {} values, the adapter's has {}", hm.len(), m.len_words())));
            }
            ctx.write_f32(m, hm);
            ctx.write_f32(v, hv);
        }
        self.steps = steps;
        Ok(())
    }
}

/// Views that cover an arena within the adapter's storage binding limit.
fn chunks(ctx: &GpuContext, arena: &Arena) -> Vec<GpuBuffer> {
    let limits = ctx.limits();
    arena.chunks(limits.max_storage_buffer_binding_size, limits.min_storage_buffer_offset_alignment as u64)
}
