//! A tick's work split over threads: the parts side by side on a pool of threads, the
//! results joined in the parts' order. Whatever the split, the result is
//! the one a single thread gets, so a plan does not depend on how many threads made it.
//! Pure, as the planner is: threads, no I/O, no clock.

use std::ops::Range;

/// Below this many instances per part, handing a part to another thread costs more than it
/// saves (a tick's passes cost ~10–60 ns an instance; a part's hand-over and its cold caches
/// some tens of microseconds).
pub const MIN_PER_PART: usize = 4096;

/// `0..len` in at most `threads` contiguous parts of nearly equal size, none smaller than
/// `min` (one part when `len` is small or `threads` is 0 or 1).
pub fn parts(len: usize, threads: usize, min: usize) -> Vec<Range<usize>> {
    let n = threads.min(len / min.max(1)).max(1);
    (0..n).map(|i| len * i / n..len * (i + 1) / n).collect()
}

/// `len` items in at most `threads` contiguous parts of nearly equal weight (`weight` of
/// each item, asked only when there are threads to share), none lighter than `min` but
/// perhaps the last (one part when the total is small or `threads` is 0 or 1); no part is
/// empty, but for one part of no items.
pub fn parts_by_weight(len: usize, threads: usize, min: usize, weight: impl Fn(usize) -> usize) -> Vec<Range<usize>> {
    if threads <= 1 {
        return std::iter::once(0..len).collect();
    }
    let weights: Vec<usize> = (0..len).map(weight).collect();
    let total: usize = weights.iter().sum();
    let n = threads.min(total / min.max(1)).max(1);
    let mut parts = Vec::with_capacity(n);
    let (mut start, mut sum) = (0, 0);
    for (i, weight) in weights.iter().enumerate() {
        sum += weight;
        // Cut once this part holds its share of the total so far.
        if parts.len() + 1 < n && sum * n >= total * (parts.len() + 1) {
            parts.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < len || parts.is_empty() {
        parts.push(start..len);
    }
    parts
}

/// `items` cut into `parts` (contiguous, in order, covering them all).
/// One part is `items` as they are: nothing moved (a tick's decisions are ~1 KiB each).
pub fn split_owned<T>(items: Vec<T>, parts: &[Range<usize>]) -> Vec<Vec<T>> {
    debug_assert_eq!(parts.last().map_or(0, |p| p.end), items.len(), "parts cover every item");
    if parts.len() <= 1 {
        return vec![items];
    }
    let mut rest = items.into_iter();
    parts.iter().map(|part| rest.by_ref().take(part.len()).collect()).collect()
}

/// The parts' results joined in order; one part's as it is, nothing moved.
pub fn concat<T>(parts: Vec<Vec<T>>) -> Vec<T> {
    let mut parts = parts.into_iter();
    let mut all = parts.next().unwrap_or_default();
    for part in parts {
        all.extend(part);
    }
    all
}

/// `f` of each part, in order. Several parts run on rayon's pool of threads, made once (the
/// controller makes it `--plan-threads` strong; threads started per part cost more than they
/// saved: a fresh stack and allocator cache each time); one part alone runs on the caller's
/// thread. A panic in any part is the caller's panic.
pub fn map<P: Send, R: Send>(parts: Vec<P>, f: impl Fn(P) -> R + Sync) -> Vec<R> {
    use rayon::prelude::*;
    if parts.len() <= 1 {
        return parts.into_iter().map(f).collect();
    }
    parts.into_par_iter().map(&f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_everything_once_in_order() {
        for len in [0, 1, 5, 4095, 4096, 8191, 8192, 10_000, 100_003] {
            for threads in [0, 1, 2, 3, 8] {
                let split = parts(len, threads, 4096);
                assert!(!split.is_empty());
                assert!(split.len() <= threads.max(1), "{len} in {threads}: {split:?}");
                assert_eq!(split.first().unwrap().start, 0);
                assert_eq!(split.last().unwrap().end, len);
                assert!(split.windows(2).all(|w| w[0].end == w[1].start), "{split:?}");
                if split.len() > 1 {
                    assert!(split.iter().all(|p| p.len() >= 4096), "{len} in {threads}: {split:?}");
                }
            }
        }
        assert_eq!(parts(10_000, 2, 4096), vec![0..5000, 5000..10_000]);
        assert_eq!(parts(8191, 2, 4096), vec![0..8191], "too few for two parts of 4,096");
    }

    #[test]
    fn parts_by_weight_cover_everything_once_in_order() {
        let by = |weights: &[usize], threads| parts_by_weight(weights.len(), threads, 4096, |i| weights[i]);
        let even = vec![50; 2000];
        assert_eq!(by(&even, 2), vec![0..1000, 1000..2000]);
        assert_eq!(by(&even, 1), vec![0..2000]);
        assert_eq!(parts_by_weight(2000, 1, 4096, |_| unreachable!("no weight asked for one thread")), vec![0..2000]);
        assert_eq!(by(&even[..100], 2), vec![0..100], "5,000 in all: one part");
        assert_eq!(by(&[], 4), vec![0..0]);
        // One heavy item: fewer parts than threads, none empty.
        let heavy = [1, 100_000, 1, 1];
        let split = by(&heavy, 4);
        assert!(split.iter().all(|p| !p.is_empty()), "{split:?}");
        assert_eq!(split.first().unwrap().start, 0);
        assert_eq!(split.last().unwrap().end, 4);
        assert!(split.windows(2).all(|w| w[0].end == w[1].start), "{split:?}");
        // Uneven weights: each part near its share.
        let uneven: Vec<usize> = (0..2000).map(|i| 1 + (i * 7919) % 100).collect();
        let split = by(&uneven, 3);
        assert_eq!(split.len(), 3);
        let total: usize = uneven.iter().sum();
        for part in &split {
            let weight: usize = uneven[part.clone()].iter().sum();
            assert!(weight.abs_diff(total / 3) <= 200, "{weight} of {total}: {split:?}");
        }
    }

    #[test]
    fn results_come_in_the_parts_order() {
        let squares = map((0..7u64).collect(), |n| {
            // Later parts finish first.
            std::thread::sleep(std::time::Duration::from_millis(10 * (7 - n)));
            n * n
        });
        assert_eq!(squares, vec![0, 1, 4, 9, 16, 25, 36]);
        assert_eq!(map(Vec::<u8>::new(), |n| n), Vec::<u8>::new());
        let items: Vec<u32> = (0..10).collect();
        assert_eq!(split_owned(items, &[0..3, 3..3, 3..10]), vec![vec![0, 1, 2], vec![], (3..10).collect()]);
        assert_eq!(concat(vec![vec![0, 1, 2], vec![], vec![3, 4]]), vec![0, 1, 2, 3, 4]);
        assert_eq!(concat(Vec::<Vec<u8>>::new()), Vec::<u8>::new());
    }

    #[test]
    fn one_part_is_the_items_themselves() {
        let items: Vec<u32> = (0..10).collect();
        let at = items.as_ptr();
        let parts = split_owned(items, std::slice::from_ref(&(0..10)));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].as_ptr(), at, "split: not moved");
        let joined = concat(parts);
        assert_eq!((joined.as_ptr(), joined.len()), (at, 10), "joined: not moved");
    }

    #[test]
    #[should_panic(expected = "part 2 fails")]
    fn a_part_that_panics_panics_the_caller() {
        map(vec![1, 2, 3], |n| assert_ne!(n, 2, "part {n} fails"));
    }
}
