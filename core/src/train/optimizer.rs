//! AdamW over the adapter's A and B, with global gradient-norm clipping, on the GPU.

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
    /// (m, v) for A then B of every adapter tensor.
    moments: Vec<(GpuBuffer, GpuBuffer)>,
    clip: GpuBuffer, // (2): ‖g‖, clip factor
    sums: GpuBuffer, // one per gradient tensor
}

impl Optimizer {
    pub fn new(ctx: &GpuContext, adapter: &GpuAdapter, cfg: AdamwConfig, max_grad_norm: f32) -> Result<Self> {
        let mut moments = Vec::new();
        for t in &adapter.tensors {
            for n in [t.rank * t.d_in, t.d_out * t.rank] {
                let (m, v) = (ctx.alloc_f32(n)?, ctx.alloc_f32(n)?);
                ctx.zero(&m);
                ctx.zero(&v);
                moments.push((m, v));
            }
        }
        Ok(Optimizer { cfg, max_grad_norm, steps: 0, clip: ctx.alloc_f32(2)?, sums: ctx.alloc_f32(moments.len())?, moments })
    }

    /// Clips the gradients to max_grad_norm as a whole, then one AdamW step at `lr`.
    /// Returns the gradient norm before clipping.
    pub async fn step(&mut self, ctx: &GpuContext, adapter: &GpuAdapter, grads: &[(GpuBuffer, GpuBuffer)], lr: f32) -> Result<f32> {
        let mut list = Vec::with_capacity(2 * grads.len());
        for ((da, db), t) in grads.iter().zip(&adapter.tensors) {
            list.push((da, t.rank * t.d_in));
            list.push((db, t.d_out * t.rank));
        }
        grad_norm(ctx, &self.clip, &self.sums, &list, self.max_grad_norm)?;
        self.steps += 1;
        let cfg = AdamwConfig { lr, ..self.cfg };
        let params = adapter.tensors.iter().flat_map(|t| [&t.a, &t.b]);
        for ((param, (g, n)), (m, v)) in params.zip(&list).zip(&self.moments) {
            adamw_update(ctx, param, m, v, g, &self.clip, *n, self.steps, &cfg)?;
        }
        let norm = ctx.read_f32_prefix(&self.clip, 1).await?[0];
        Ok(norm)
    }

    /// (m, v) of every tensor, for a checkpoint.
    pub async fn moments(&self, ctx: &GpuContext) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let mut out = Vec::with_capacity(self.moments.len());
        for (m, v) in &self.moments {
            out.push((ctx.read_f32(m).await?, ctx.read_f32(v).await?));
        }
        Ok(out)
    }

    /// Restores what [`Optimizer::moments`] returned.
    pub fn set_moments(&mut self, ctx: &GpuContext, moments: &[(Vec<f32>, Vec<f32>)], steps: u32) -> Result<()> {
        if moments.len() != self.moments.len() {
            return Err(Error::Shape(format!("the checkpoint holds {} optimizer tensors, this adapter needs {}", moments.len(), self.moments.len())));
        }
        for ((m, v), (hm, hv)) in self.moments.iter().zip(moments) {
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
