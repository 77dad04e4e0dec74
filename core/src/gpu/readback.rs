//! Async readback: copy to a mappable staging buffer, `map_async`, await the callback.
//! Native builds drive the device with a poll (a blocking wait compiled only there); the
//! browser resolves the map by itself.

use super::{GpuBuffer, GpuContext};
use crate::{Error, Result};

/// Staging buffers kept per size (greedy decoding has two reads in flight).
const STAGING_PER_SIZE: usize = 2;

/// A readback submitted and not yet waited for ([`GpuContext::read_later`]).
pub(crate) struct PendingRead {
    staging: wgpu::Buffer,
    class: u64,
    size: u64,
    len: u64,
    submission: Option<wgpu::SubmissionIndex>,
    mapped: futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

impl GpuContext {
    pub async fn read_bytes(&self, buf: &GpuBuffer) -> Result<Vec<u8>> {
        self.read_prefix(buf, buf.len_bytes()).await
    }

    /// The first `len` bytes of `buf` (at most its length): only they are copied and mapped.
    async fn read_prefix(&self, buf: &GpuBuffer, len: u64) -> Result<Vec<u8>> {
        self.read_raw(buf.raw(), buf.offset(), len.min(buf.len_bytes())).await
    }

    /// `len` bytes of a device buffer from byte `offset`. The staging buffers are kept for
    /// the next readback of the same size class (a training step reads its per-token
    /// losses, as many as the batch has tokens: one class serves many lengths).
    pub(crate) async fn read_raw(&self, buf: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        let pending = self.start_read(buf, offset, len);
        self.finish_read(pending).await
    }

    /// Starts reading the first `len` bytes of `buf` once the work recorded so far is done:
    /// submits it with the copy, so the host can record more before it waits
    /// ([`GpuContext::finish_read`]).
    pub(crate) fn read_later(&self, buf: &GpuBuffer, len: u64) -> PendingRead {
        self.start_read(buf.raw(), buf.offset(), len.min(buf.len_bytes()))
    }

    fn start_read(&self, buf: &wgpu::Buffer, offset: u64, len: u64) -> PendingRead {
        let size = len.next_multiple_of(4).max(4);
        let class = super::layout::scratch_bytes(size).min(self.limits().max_buffer_size.max(size));
        let kept = self.staging.lock().unwrap().get_mut(&class).and_then(Vec::pop);
        let staging = kept.unwrap_or_else(|| {
            self.counters.buffers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: class,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        self.record(|encoder| encoder.copy_buffer_to_buffer(buf, offset, &staging, 0, Some(size)));
        let submission = self.flush();
        let (tx, mapped) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, ..size, move |r| {
            let _ = tx.send(r);
        });
        PendingRead { staging, class, size, len, submission, mapped }
    }

    /// The bytes of a read started by [`GpuContext::read_later`], once the GPU has done the
    /// work submitted with it (natively, waiting for that submission alone: later ones run on).
    pub(crate) async fn finish_read(&self, read: PendingRead) -> Result<Vec<u8>> {
        let PendingRead { staging, class, size, len, submission, mapped } = read;
        self.wait_native(submission)?;
        let mapped = mapped.await.map_err(|_| Error::DeviceLost("during a readback".into()))?;
        self.take_device_error()?;
        mapped.map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        let data = {
            let view = staging
                .get_mapped_range(..size)
                .map_err(|e| Error::Gpu(format!("readback mapping failed: {e}")))?;
            view[..len as usize].to_vec()
        };
        staging.unmap();
        let mut kept = self.staging.lock().unwrap();
        let same_size = kept.entry(class).or_default();
        if same_size.len() < STAGING_PER_SIZE {
            same_size.push(staging);
        }
        Ok(data)
    }

    pub async fn read_f32(&self, buf: &GpuBuffer) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buf).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The first `n` f32 values of `buf`.
    pub async fn read_f32_prefix(&self, buf: &GpuBuffer, n: usize) -> Result<Vec<f32>> {
        let bytes = self.read_prefix(buf, n as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub async fn read_u32(&self, buf: &GpuBuffer) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(buf).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Submits recorded work and resolves when the GPU has finished all of it.
    pub async fn finish(&self) -> Result<()> {
        let submission = self.flush();
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.wait_native(submission)?;
        rx.await.map_err(|_| Error::DeviceLost("while working".into()))?;
        self.take_device_error()
    }

    /// Waits for `submission` (all submitted work where None) natively; on the web the
    /// browser resolves the callbacks by itself.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn wait_native(&self, submission: Option<wgpu::SubmissionIndex>) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: submission, timeout: None })
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed: {e}")))
    }

    #[cfg(target_arch = "wasm32")]
    pub(crate) fn wait_native(&self, _submission: Option<wgpu::SubmissionIndex>) -> Result<()> {
        Ok(())
    }
}
