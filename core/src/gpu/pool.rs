//! Storage buffers come from a pool: a dropped [`GpuBuffer`] goes back to a free list keyed
//! by its size and is handed out again, so a training loop allocates nothing once it has
//! seen its batches' sizes (the scratch whose size follows the batch comes in size classes:
//! `GpuContext::alloc_scratch_f32`). The pool also counts live and peak bytes, which is
//! Hearth's GPU memory figure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes held by live buffers now and at most since the last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub live_bytes: u64,
    pub peak_bytes: u64,
    /// Bytes in free lists: allocated on the device but not in use.
    pub cached_bytes: u64,
}

#[derive(Default)]
pub(crate) struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: MemoryStats,
}

/// A storage buffer owned by the pool, or a view of a part of one (an arena's tensor).
/// `len` is the number of bytes the caller asked for; the device buffer may be larger
/// (rounded to 16 bytes for vec4 bindings). Every launch, copy, fill and readback of a view
/// touches only its bytes, so a view is used wherever a buffer is.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    /// Where this buffer's bytes start in `buffer` (0 unless a view).
    offset: u64,
    len: u64,
    owner: Owner,
}

enum Owner {
    /// Returned to the pool on drop.
    Pool(Arc<Pool>),
    /// A view: holds the buffer it is part of, so that it is not returned to the pool (and
    /// handed out again) while the view lives.
    View { _whole: Arc<GpuBuffer> },
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// Bytes the caller asked for.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Where this buffer starts in [`GpuBuffer::raw`], in bytes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The bytes a launch binds: `len` rounded up to 16 (vec4 arrays), within the device
    /// buffer.
    pub(crate) fn binding_size(&self) -> u64 {
        super::layout::pooled_bytes(self.len).min(self.raw().size() - self.offset)
    }

    /// A view of `len` bytes of `whole` from byte `offset` (a multiple of the adapter's
    /// storage offset alignment when it is to be bound; see `GpuContext::alloc_arena`).
    pub fn view(whole: &Arc<GpuBuffer>, offset: u64, len: u64) -> GpuBuffer {
        assert!(offset + len <= super::layout::pooled_bytes(whole.len), "a view past the end of its buffer");
        GpuBuffer { buffer: whole.buffer.clone(), offset: whole.offset + offset, len, owner: Owner::View { _whole: Arc::clone(whole) } }
    }

    /// The views `first` to `last` of `whole` (in that order in it) and what lies between
    /// them, as one view: parts of an arena that one launch binds as one operand.
    pub fn spanning(whole: &Arc<GpuBuffer>, first: &GpuBuffer, last: &GpuBuffer) -> GpuBuffer {
        GpuBuffer::view(whole, first.offset - whole.offset, last.offset + last.len - first.offset)
    }

    /// Whether `other` is this buffer: the same bytes of the same device buffer.
    pub fn same(&self, other: &GpuBuffer) -> bool {
        self.buffer == other.buffer && (self.offset, self.len) == (other.offset, other.len)
    }

    /// Number of f32 (or u32) elements.
    pub fn len_words(&self) -> usize {
        (self.len / 4) as usize
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let (Some(buffer), Owner::Pool(pool)) = (self.buffer.take(), &self.owner) {
            pool.release(buffer);
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes)", self.len)
    }
}

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Pool {
    /// A buffer of at least `len` bytes from the free list, else a new one (counted in
    /// `created`).
    pub(crate) fn acquire(self: &Arc<Self>, device: &wgpu::Device, len: u64, created: &AtomicU64) -> GpuBuffer {
        let size = super::layout::pooled_bytes(len);
        let mut st = self.state.lock().unwrap();
        let buffer = match st.free.get_mut(&size).and_then(Vec::pop) {
            Some(b) => {
                st.stats.cached_bytes -= size;
                b
            }
            None => {
                created.fetch_add(1, Ordering::Relaxed);
                device.create_buffer(&wgpu::BufferDescriptor { label: None, size, usage: STORAGE_USAGE, mapped_at_creation: false })
            }
        };
        st.stats.live_bytes += size;
        st.stats.peak_bytes = st.stats.peak_bytes.max(st.stats.live_bytes);
        GpuBuffer { buffer: Some(buffer), offset: 0, len, owner: Owner::Pool(Arc::clone(self)) }
    }

    fn release(&self, buffer: wgpu::Buffer) {
        let mut st = self.state.lock().unwrap();
        let size = buffer.size();
        st.stats.live_bytes -= size;
        st.stats.cached_bytes += size;
        st.free.entry(size).or_default().push(buffer);
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.state.lock().unwrap().stats
    }

    pub(crate) fn reset_peak(&self) {
        let mut st = self.state.lock().unwrap();
        st.stats.peak_bytes = st.stats.live_bytes;
    }

    /// Frees the cached (unused) buffers back to the device.
    pub(crate) fn trim(&self) {
        let mut st = self.state.lock().unwrap();
        st.free.clear();
        st.stats.cached_bytes = 0;
    }
}
