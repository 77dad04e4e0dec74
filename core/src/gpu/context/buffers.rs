//! Buffers from the context's pool: allocations, uploads and writes, arenas of parts.

use super::GpuContext;
use crate::gpu::pool::{GpuBuffer, MemoryStats};
use crate::{Error, Result};
use std::sync::Arc;

impl GpuContext {
    /// A zero-initialised buffer of `len` bytes from the pool (it may hold stale data when
    /// reused: kernels write every output element).
    pub fn alloc(&self, len: u64) -> Result<GpuBuffer> {
        let max = self.limits.max_buffer_size;
        if len > max {
            return Err(Error::OutOfMemory(format!(
                "a buffer of {len} bytes exceeds this adapter's max_buffer_size of {max} bytes"
            )));
        }
        Ok(self.pool.acquire(&self.device, len, &self.counters.buffers))
    }

    /// One zeroed buffer holding `parts` (f32 counts) at offsets the adapter can bind, and a
    /// view of each part: an arena, so that ops over all of them are single launches (or
    /// one per `max_storage_buffer_binding_size` of it) and one readback.
    pub fn alloc_arena(&self, parts: &[usize]) -> Result<Arena> {
        let align = self.storage_offset_alignment();
        let mut offsets = Vec::with_capacity(parts.len());
        let mut end = 0u64;
        for &n in parts {
            offsets.push(end);
            end = (end + 4 * n as u64).next_multiple_of(align);
        }
        // An Arc keeps arenas Send natively; on the web wgpu's buffers are not Send anyway.
        #[allow(clippy::arc_with_non_send_sync)]
        let whole = Arc::new(self.alloc(end.max(4))?);
        self.zero(&whole);
        let views = parts.iter().zip(offsets).map(|(&n, at)| GpuBuffer::view(&whole, at, 4 * n as u64)).collect();
        Ok(Arena { whole, views })
    }

    /// One buffer holding `parts` back to back, and a view of each: tensors that ops read
    /// apart and together (q's, k's and v's weights, read as one by a single matmul). None
    /// where a part's length is not a multiple of the storage offset alignment (the part
    /// after it could not be bound where it starts) or the whole passes what one binding
    /// can hold.
    pub fn upload_packed(&self, parts: &[&[u8]]) -> Result<Option<Arena>> {
        let align = self.storage_offset_alignment();
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if parts.iter().any(|p| !(p.len() as u64).is_multiple_of(align)) || len > self.max_bound_bytes() {
            return Ok(None);
        }
        // An Arc keeps arenas Send natively; on the web wgpu's buffers are not Send anyway.
        #[allow(clippy::arc_with_non_send_sync)]
        let whole = Arc::new(self.upload_bytes(&parts.concat())?);
        let mut at = 0;
        let views = parts
            .iter()
            .map(|p| {
                at += p.len() as u64;
                GpuBuffer::view(&whole, at - p.len() as u64, p.len() as u64)
            })
            .collect();
        Ok(Some(Arena { whole, views }))
    }

    pub fn alloc_f32(&self, n: usize) -> Result<GpuBuffer> {
        self.alloc(4 * n as u64)
    }

    /// A buffer of at least `n` f32 for work within a step whose size follows the batch (a
    /// product to accumulate, a split reduction's parts, a dropped copy): its length is
    /// `n`'s size class ([`crate::gpu::layout::scratch_bytes`]), all of which launches bind, so
    /// that batches of other lengths get the same pooled buffers and cached bind groups
    /// instead of a new buffer (kept in the pool) and new bind groups per length.
    pub fn alloc_scratch_f32(&self, n: usize) -> Result<GpuBuffer> {
        let len = 4 * n as u64;
        let class = crate::gpu::layout::scratch_bytes(len);
        self.alloc(if class <= self.max_bound_bytes() { class } else { len })
    }

    pub fn upload_bytes(&self, data: &[u8]) -> Result<GpuBuffer> {
        let buf = self.alloc(data.len() as u64)?;
        self.write_bytes(&buf, data);
        Ok(buf)
    }

    pub fn upload_f32(&self, data: &[f32]) -> Result<GpuBuffer> {
        self.upload_bytes(bytemuck::cast_slice(data))
    }

    pub fn upload_u32(&self, data: &[u32]) -> Result<GpuBuffer> {
        self.upload_bytes(bytemuck::cast_slice(data))
    }

    /// Runs `f` with a buffer holding `data`: a small table a kernel reads (rope's
    /// frequencies), uploaded the first time these values are asked for and kept, so that
    /// launches allocate nothing after the first.
    pub(crate) fn with_constant<R>(&self, data: &[f32], f: impl FnOnce(&GpuBuffer) -> Result<R>) -> Result<R> {
        let key: Vec<u32> = data.iter().map(|x| x.to_bits()).collect();
        let mut constants = self.constants.lock().unwrap();
        if !constants.contains_key(&key) {
            let buf = self.upload_f32(data)?;
            constants.insert(key.clone(), buf);
        }
        f(&constants[&key])
    }

    /// Writes bytes at the start of `buf`, padded with zeros to a multiple of 4.
    pub fn write_bytes(&self, buf: &GpuBuffer, data: &[u8]) {
        // Queue writes are ordered before later submissions; flush recorded dispatches first
        // so a write cannot overtake the kernels recorded before it.
        self.flush();
        if data.len().is_multiple_of(4) {
            self.queue.write_buffer(buf.raw(), buf.offset(), data);
        } else {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buf.raw(), buf.offset(), &padded);
        }
    }

    /// Writes `len` bytes (a multiple of 4) at the start of `buf` in pieces: `fill` copies
    /// each through `put(offset, bytes)` straight into the upload's staging memory, so that
    /// what it gathers is copied once on the host.
    pub fn write_pieces(&self, buf: &GpuBuffer, len: usize, fill: impl FnOnce(&mut dyn FnMut(usize, &[u8]))) {
        let Some(size) = wgpu::BufferSize::new(len as u64) else { return };
        self.flush();
        let Some(mut view) = self.queue.write_buffer_with(buf.raw(), buf.offset(), size) else {
            // wgpu has reported the invalid write (out of the buffer's bounds) to the device's
            // error handler, as write_buffer would
            return;
        };
        fill(&mut |at, bytes| view.slice(at..at + bytes.len()).copy_from_slice(bytes));
    }

    pub fn write_f32(&self, buf: &GpuBuffer, data: &[f32]) {
        self.write_bytes(buf, bytemuck::cast_slice(data));
    }

    pub fn memory(&self) -> MemoryStats {
        self.pool.stats()
    }

    pub fn reset_peak_memory(&self) {
        self.pool.reset_peak();
    }

    /// Returns unused pooled buffers to the device.
    pub fn trim_pool(&self) {
        self.pipelines.forget_groups();
        self.staging.lock().unwrap().clear();
        self.pool.trim();
    }
}

/// Tensors in one buffer (see [`GpuContext::alloc_arena`]).
pub struct Arena {
    /// The whole buffer, gaps between the parts included (they stay zero; packed: none).
    pub whole: Arc<GpuBuffer>,
    /// Each part as its own buffer (its `offset()` is where it starts in `whole`).
    pub views: Vec<GpuBuffer>,
}

impl Arena {
    /// The whole buffer as a buffer of its own.
    pub fn all(&self) -> GpuBuffer {
        GpuBuffer::view(&self.whole, 0, self.whole.len_bytes())
    }

    /// Another view of part `i` (the arena keeps its own).
    pub fn view(&self, i: usize) -> GpuBuffer {
        GpuBuffer::view(&self.whole, self.views[i].offset(), self.views[i].len_bytes())
    }

    /// The parts' values from one readback of the whole buffer.
    pub async fn read_parts(&self, ctx: &GpuContext) -> Result<Vec<Vec<f32>>> {
        let all = ctx.read_f32(&self.whole).await?;
        Ok(self.views.iter().map(|v| all[(v.offset() / 4) as usize..][..v.len_words()].to_vec()).collect())
    }

    /// Bytes `start..start + len` of part `i` as a buffer of their own (a fused layer's rows
    /// of B). A bound buffer must start at a multiple of `align` (the adapter's storage offset
    /// alignment): `what` names the part in the error when it does not.
    pub fn sub_view(&self, i: usize, start: u64, len: u64, align: u64, what: &str) -> Result<GpuBuffer> {
        let at = self.views[i].offset() - self.whole.offset() + start;
        crate::error::ensure(at.is_multiple_of(align), || {
            format!("{what} starts at byte {at} of its buffer, which the GPU cannot bind (it needs a multiple of {align}): choose a LoRA rank that is a multiple of 64")
        })?;
        Ok(GpuBuffer::view(&self.whole, at, len))
    }

    /// Views of the whole buffer, each at most `max_bytes` long, that cover it: the whole
    /// buffer, unless it passes the adapter's storage binding limit.
    pub fn chunks(&self, max_bytes: u64, align: u64) -> Vec<GpuBuffer> {
        let step = (max_bytes / align * align).max(align);
        let len = self.whole.len_bytes();
        (0..len.div_ceil(step)).map(|i| GpuBuffer::view(&self.whole, i * step, step.min(len - i * step))).collect()
    }
}
