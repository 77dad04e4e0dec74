//! Launches recorded into one compute pass, submitted in batches, timed where profiled.

use super::GpuContext;
use crate::gpu::recording::{KernelStat, KernelTiming, LaunchTimer, Profile, Profiling, Recording, Stopwatch, Timer, GRID_MARK, SUBMIT_EVERY};
use crate::gpu::Kernel;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

impl GpuContext {
    /// Runs `f` on the pending encoder (the shared compute pass ended first), creating it if
    /// needed; work recorded there is submitted by the next [`GpuContext::flush`].
    pub(crate) fn record<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut rec = self.recording.lock().unwrap();
        rec.pass = None;
        f(self.encoder(&mut rec))
    }

    /// Runs `f` in the shared compute pass with the ring offset of `params`: whether the
    /// recording now holds `SUBMIT_EVERY` launches and should be submitted, and in a profile
    /// timed in passes, the launch's number among those timed (timestamps on either side).
    pub(crate) fn in_pass(&self, params: &[u8], f: impl FnOnce(&mut wgpu::ComputePass<'static>, u32)) -> (bool, Option<usize>) {
        let mut rec = self.recording.lock().unwrap();
        let offset = self.ring.place(&mut rec.params, params);
        if rec.pass.is_none() {
            let pass = self.encoder(&mut rec).begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            rec.pass = Some(pass.forget_lifetime());
        }
        let pass = rec.pass.as_mut().expect("pass just opened");
        let mut profiling = self.profiling.lock().unwrap();
        let pair = profiling.as_mut().and_then(|p| p.launch_timer.as_mut()).and_then(|t| t.take_pair(&self.device));
        if let Some((queries, first, _)) = pair {
            pass.write_timestamp(queries, first);
        }
        f(pass, offset);
        if let Some((queries, first, _)) = pair {
            pass.write_timestamp(queries, first + 1);
        }
        let timed = pair.map(|(_, _, launch)| launch);
        drop(profiling);
        rec.launches += 1;
        (rec.launches >= SUBMIT_EVERY, timed)
    }

    fn encoder<'r>(&self, rec: &'r mut Recording) -> &'r mut wgpu::CommandEncoder {
        if rec.encoder.is_none() {
            let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            if let Some(timer) = self.profiling.lock().unwrap().as_mut().and_then(|p| p.timer.as_mut()) {
                rec.timed_from = timer.take_pair();
                if let Some(i) = rec.timed_from {
                    encoder.write_timestamp(&timer.queries, i);
                }
            }
            rec.encoder = Some(encoder);
        }
        rec.encoder.as_mut().expect("encoder just made")
    }

    /// Submits every dispatch recorded so far; the submission's index, where there was any.
    pub fn flush(&self) -> Option<wgpu::SubmissionIndex> {
        let mut rec = self.recording.lock().unwrap();
        self.submit(&mut rec)
    }

    fn submit(&self, rec: &mut Recording) -> Option<wgpu::SubmissionIndex> {
        let started = Stopwatch::start();
        rec.pass = None;
        rec.launches = 0;
        let mut encoder = rec.encoder.take()?;
        if let Some(i) = rec.timed_from.take() {
            if let Some(timer) = self.profiling.lock().unwrap().as_ref().and_then(|p| p.timer.as_ref()) {
                encoder.write_timestamp(&timer.queries, i + 1);
            }
        }
        if !rec.params.is_empty() {
            self.queue.write_buffer(&self.ring.buffer, 0, &rec.params);
            rec.params.clear();
        }
        let submission = self.queue.submit([encoder.finish()]);
        self.counters.submissions.fetch_add(1, Ordering::Relaxed);
        self.counters.add_host_time(started);
        Some(submission)
    }

    /// Counts a launch of `k`, just recorded (`timed`: its number among those timed in
    /// passes), in the open profile, if any; in a profile that times launches alone, submits
    /// it and waits for it first.
    pub(crate) fn note_launch(&self, k: &Kernel, flops: f64, timed: Option<usize>, grid: [u32; 3]) -> Result<()> {
        // one lock per launch outside a profile
        let alone = match self.profiling.lock().unwrap().as_ref() {
            None => return Ok(()),
            Some(p) => p.kernel_times == Some(KernelTiming::Alone),
        };
        let mut ms = 0.0;
        if alone {
            let start = Stopwatch::start();
            let submission = self.flush();
            self.wait_native(submission)?;
            ms = start.elapsed_ns() as f64 / 1e6;
        }
        if let Some(p) = self.profiling.lock().unwrap().as_mut() {
            let scope = p.scope.map_or(String::new(), |s| format!("{s}/"));
            let mut name = format!("{scope}{}", k.name());
            // timed, the launches that count their FLOPs (matmuls, attention) apart by their
            // grid, which tells the shapes apart (GRID_MARK: a table by kernel drops it)
            if p.kernel_times.is_some() && flops > 0.0 {
                name.push_str(&format!("{GRID_MARK}{}×{}×{}", grid[0], grid[1], grid[2]));
            }
            if let (Some(i), Some(t)) = (timed, p.launch_timer.as_mut()) {
                t.names.resize(t.names.len().max(i + 1), String::new());
                t.names[i].clone_from(&name);
            }
            let stat = p.kernels.entry(name).or_insert_with(KernelStat::default);
            stat.launches += 1;
            stat.flops += flops;
            stat.ms += ms;
        }
        Ok(())
    }

    /// Whether GPU time can be measured here (timestamps inside command encoders).
    pub fn has_gpu_timer(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    }

    /// Opens a profiling window: launches, FLOPs, host and GPU time from here to
    /// [`GpuContext::profile_end`].
    pub fn profile_begin(&self) {
        self.profile_begin_with(false);
    }

    /// [`GpuContext::profile_begin`]; with `kernel_times`, each launch is timed: by
    /// timestamps on either side of it in the step where the adapter has them inside passes,
    /// else submitted and waited for alone (natively only: the browser cannot wait).
    pub fn profile_begin_with(&self, kernel_times: bool) {
        self.flush();
        let start = self.counters.snapshot();
        let timer = self.has_gpu_timer().then(|| Timer::new(&self.device));
        let in_pass = self.features.contains(wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
        let kernel_times = kernel_times.then_some(if in_pass { KernelTiming::InPass } else { KernelTiming::Alone });
        let launch_timer = (kernel_times == Some(KernelTiming::InPass)).then(LaunchTimer::new);
        *self.profiling.lock().unwrap() = Some(Profiling { start, kernel_times, kernels: Default::default(), timer, launch_timer, scope: None });
    }

    /// Runs `f`, listing its launches in an open profile as parts of the op `scope` (their
    /// FLOPs then do not count as the model's matmuls).
    pub(crate) fn profile_scope<R>(&self, scope: &'static str, f: impl FnOnce() -> R) -> R {
        let set = |s| {
            if let Some(p) = self.profiling.lock().unwrap().as_mut() {
                p.scope = s;
            }
        };
        set(Some(scope));
        let r = f();
        set(None);
        r
    }

    /// Waits for the window's work and reports it.
    pub async fn profile_end(&self) -> Result<Profile> {
        self.finish().await?;
        let p = self.profiling.lock().unwrap().take().ok_or_else(|| Error::Gpu("profile_end without profile_begin".into()))?;
        let (now, then) = (self.counters.snapshot(), p.start);
        let mut profile = Profile {
            dispatches: now.dispatches - then.dispatches,
            submissions: now.submissions - then.submissions,
            bind_groups_created: now.bind_groups - then.bind_groups,
            buffers_created: now.buffers - then.buffers,
            host_ms: (now.host_ns - then.host_ns) as f64 / 1e6,
            gpu_ms: None,
            gpu_time_note: None,
            kernels: p.kernels,
            kernel_times: p.kernel_times,
        };
        if let Some(t) = &p.launch_timer {
            self.add_launch_times(t, &mut profile.kernels).await?;
        }
        match p.timer {
            None => profile.gpu_time_note = Some("this adapter offers no timestamp queries inside command encoders".into()),
            Some(t) if t.overflowed => profile.gpu_time_note = Some("more submissions than the timestamp set holds".into()),
            Some(t) => {
                if t.next > 0 {
                    self.record(|e| e.resolve_query_set(&t.queries, 0..t.next, &t.resolved, 0));
                    let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.read_raw(&t.resolved, 0, t.next as u64 * 8).await?);
                    let period = self.queue.get_timestamp_period() as f64;
                    let spans: Vec<(u64, u64)> = ticks.chunks(2).map(|pair| (pair[0], pair[1])).collect();
                    profile.gpu_ms = Some(busy_ticks(spans) as f64 * period / 1e6);
                }
            }
        }
        Ok(profile)
    }

    /// Adds each timed launch's time between its timestamps to its kernel's.
    async fn add_launch_times(&self, t: &LaunchTimer, kernels: &mut BTreeMap<String, KernelStat>) -> Result<()> {
        let period = self.queue.get_timestamp_period() as f64;
        let mut names = t.names.iter();
        for (i, (queries, resolved)) in t.sets.iter().enumerate() {
            let used = t.used_in(i);
            self.record(|e| e.resolve_query_set(queries, 0..used, resolved, 0));
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.read_raw(resolved, 0, used as u64 * 8).await?);
            for (pair, name) in ticks.chunks(2).zip(&mut names) {
                if let Some(stat) = kernels.get_mut(name) {
                    stat.ms += pair[1].saturating_sub(pair[0]) as f64 * period / 1e6;
                }
            }
        }
        Ok(())
    }
}

/// Ticks covered by the submissions' (start, end) timestamps, each counted once: a
/// submission's start may be stamped while the one before it still runs.
fn busy_ticks(mut spans: Vec<(u64, u64)>) -> u64 {
    spans.sort_unstable();
    let (mut busy, mut reached) = (0, 0);
    for (start, end) in spans {
        let start = start.max(reached);
        if end > start {
            busy += end - start;
            reached = end;
        }
    }
    busy
}

#[cfg(test)]
mod tests {
    use super::busy_ticks;

    #[test]
    fn busy_time_counts_overlapping_submissions_once() {
        assert_eq!(busy_ticks(vec![]), 0);
        // back to back, overlapping, contained, then after a gap, out of order
        assert_eq!(busy_ticks(vec![(0, 10), (10, 20), (15, 30), (16, 18), (50, 60)]), 40);
        assert_eq!(busy_ticks(vec![(50, 60), (0, 10)]), 20);
        // a reversed pair (a clock that wrapped) counts nothing
        assert_eq!(busy_ticks(vec![(5, 3), (0, 1)]), 1);
    }
}
