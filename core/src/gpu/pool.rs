//! Storage buffers come from a pool: a dropped [`GpuBuffer`] goes back to a free list keyed
//! by its size and is handed out again, so a training loop allocates nothing after its first
//! step. The pool also counts live and peak bytes, which is Hearth's GPU memory figure.

use std::collections::HashMap;
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

/// A storage buffer owned by the pool. `len` is the number of bytes the caller asked for;
/// the device buffer may be larger (rounded to 16 bytes for vec4 bindings).
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    len: u64,
    pool: Arc<Pool>,
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }

    /// Bytes the caller asked for.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Number of f32 (or u32) elements.
    pub fn len_words(&self) -> usize {
        (self.len / 4) as usize
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.release(buffer);
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
    pub(crate) fn acquire(self: &Arc<Self>, device: &wgpu::Device, len: u64) -> GpuBuffer {
        let size = len.max(16).next_multiple_of(16);
        let mut st = self.state.lock().unwrap();
        let buffer = match st.free.get_mut(&size).and_then(Vec::pop) {
            Some(b) => {
                st.stats.cached_bytes -= size;
                b
            }
            None => device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: STORAGE_USAGE,
                mapped_at_creation: false,
            }),
        };
        st.stats.live_bytes += size;
        st.stats.peak_bytes = st.stats.peak_bytes.max(st.stats.live_bytes);
        GpuBuffer { buffer: Some(buffer), len, pool: Arc::clone(self) }
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
