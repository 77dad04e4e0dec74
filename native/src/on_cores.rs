//! Work on the host split over the machine's cores: the rows of a batched decode step are
//! sampled at once (each row's sampler takes a few tenths of a millisecond for a vocabulary of
//! 50,000 to 150,000 logits, so 8 rows one after another took longer than the GPU's step).

/// `f` of each item, in order, the items split into runs of consecutive ones, each run on a
/// thread of its own (at most one per core; on the calling thread alone for one item or core).
pub fn map_on_cores<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(threads);
    let mut runs: Vec<Vec<T>> = Vec::with_capacity(threads);
    for item in items {
        match runs.last_mut() {
            Some(run) if run.len() < per_thread => run.push(item),
            _ => runs.push(vec![item]),
        }
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = runs.into_iter().map(|run| s.spawn(move || run.into_iter().map(f).collect::<Vec<R>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::map_on_cores;

    #[test]
    fn maps_every_item_in_order() {
        for n in [0, 1, 2, 3, 7, 16, 33] {
            let got = map_on_cores((0..n).collect(), |i: usize| (i, std::thread::current().id()));
            assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (0..n).collect::<Vec<_>>(), "{n} items");
        }
    }
}
