//! A thread's profile figures, which its own calls add to and a snapshot
//! reads at any time, with no lock on either side.
//!
//! A [`Table`] is a list of rows, each a key and `N` counters. Only the
//! owner thread appends rows and adds to counters (a relaxed load and a
//! relaxed store, no read-modify-write: nobody else writes). A row is
//! published by the length the owner stores after writing its key, so a
//! reader sees every row whole. Counters of one row may be read mid-update
//! of another counter of the same row (calls counted, time not yet): a
//! snapshot taken while calls run is off by at most the calls in flight;
//! once the profile is switched off it is exact.
//!
//! Rows live in segments that double in size (256, 512, 1024 ... rows),
//! each allocated once by the owner when the previous one is full, so rows
//! never move and the table takes memory only for the keys it has seen.

use std::ptr::NonNull;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Rows of the first segment.
const FIRST: usize = 256;
/// log2 of [`FIRST`].
const FIRST_BITS: u32 = FIRST.trailing_zeros();
/// Segments: FIRST * (2^SEGMENTS - 1) rows in all, far more than a
/// profile's distinct keys.
const SEGMENTS: usize = 24;

/// One key and its counters.
pub(crate) struct Row<const N: usize> {
    key: [AtomicU64; 2],
    values: [AtomicU64; N],
}

impl<const N: usize> Row<N> {
    /// The key, as appended.
    pub(crate) fn key(&self) -> (u64, u64) {
        (
            self.key[0].load(Ordering::Relaxed),
            self.key[1].load(Ordering::Relaxed),
        )
    }

    /// Counter `i`.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.values[i].load(Ordering::Relaxed)
    }

    /// Adds `n` to counter `i`: the owner thread only.
    #[inline]
    pub(crate) fn add(&self, i: usize, n: u64) {
        let c = &self.values[i];
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

/// The address of a row of a [`Table`]: a thread's hot path keeps these
/// to reach a row with one load, since rows never move.
#[derive(Clone, Copy)]
pub(crate) struct RowRef<const N: usize>(NonNull<Row<N>>);

impl<const N: usize> From<&Row<N>> for RowRef<N> {
    fn from(row: &Row<N>) -> RowRef<N> {
        RowRef(NonNull::from(row))
    }
}

impl<const N: usize> RowRef<N> {
    /// The row.
    ///
    /// # Safety
    ///
    /// The table holding the row this refers to is alive for `'a`.
    #[inline]
    pub(crate) unsafe fn get<'a>(self) -> &'a Row<N> {
        // Safety: a table frees its rows only when dropped, and never moves
        // them (each segment is allocated once); the caller keeps the table.
        unsafe { self.0.as_ref() }
    }
}

/// Rows appended by one thread, read by any; see the module docs.
pub(crate) struct Table<const N: usize> {
    segments: [OnceLock<Box<[Row<N>]>>; SEGMENTS],
    len: AtomicUsize,
}

impl<const N: usize> Default for Table<N> {
    fn default() -> Self {
        Table {
            segments: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
        }
    }
}

/// Segment and offset of row `i`.
#[inline]
fn locate(i: usize) -> (usize, usize) {
    let pos = i + FIRST;
    let segment = (usize::BITS - 1 - pos.leading_zeros() - FIRST_BITS) as usize;
    (segment, pos - (FIRST << segment))
}

impl<const N: usize> Table<N> {
    /// Row `i`, which the owner appended.
    #[inline]
    pub(crate) fn row(&self, i: u32) -> &Row<N> {
        let (segment, offset) = locate(i as usize);
        &self.segments[segment]
            .get()
            .expect("a row the owner appended")[offset]
    }

    /// Where row `i` lives, to find it again without locating it.
    #[inline]
    pub(crate) fn row_ref(&self, i: u32) -> RowRef<N> {
        RowRef::from(self.row(i))
    }

    /// Appends a row with `key` and zero counters; returns its index, or
    /// `None` when the table is full. The owner thread only.
    pub(crate) fn append(&self, key: (u64, u64)) -> Option<u32> {
        let i = self.len.load(Ordering::Relaxed);
        let (segment, offset) = locate(i);
        let rows = self.segments.get(segment)?.get_or_init(|| {
            (0..FIRST << segment)
                .map(|_| Row {
                    key: [AtomicU64::new(0), AtomicU64::new(0)],
                    values: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect()
        });
        let row = &rows[offset];
        row.key[0].store(key.0, Ordering::Relaxed);
        row.key[1].store(key.1, Ordering::Relaxed);
        self.len.store(i + 1, Ordering::Release);
        u32::try_from(i).ok()
    }

    /// Every row published so far, in the order appended.
    pub(crate) fn rows(&self) -> impl Iterator<Item = &Row<N>> {
        let len = self.len.load(Ordering::Acquire);
        (0..len).map(|i| {
            let (segment, offset) = locate(i);
            &self.segments[segment].get().expect("a published row")[offset]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_across_segments() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(255), (0, 255));
        assert_eq!(locate(256), (1, 0));
        assert_eq!(locate(767), (1, 511));
        assert_eq!(locate(768), (2, 0));
        let table = Table::<2>::default();
        for k in 0..1000u64 {
            let i = table.append((k, k * 2)).unwrap();
            table.row(i).add(0, k);
            table.row(i).add(1, 1);
        }
        let rows: Vec<_> = table
            .rows()
            .map(|r| (r.key(), r.get(0), r.get(1)))
            .collect();
        assert_eq!(rows.len(), 1000);
        assert_eq!(rows[999], ((999, 1998), 999, 1));
    }

    #[test]
    fn a_row_ref_reaches_its_row_while_later_segments_are_added() {
        let table = Table::<1>::default();
        let first = table.append((7, 0)).unwrap();
        let kept = table.row_ref(first);
        for k in 0..5000u64 {
            table.append((k, k)).unwrap();
        }
        // Safety: `table` is alive.
        let row = unsafe { kept.get() };
        row.add(0, 3);
        assert_eq!(row.key(), (7, 0));
        assert_eq!(table.row(first).get(0), 3);
    }

    #[test]
    fn a_reader_sees_whole_rows_while_the_owner_appends() {
        let table = std::sync::Arc::new(Table::<1>::default());
        let owner = {
            let table = table.clone();
            std::thread::spawn(move || {
                for k in 0..20_000u64 {
                    let i = table.append((k, !k)).unwrap();
                    table.row(i).add(0, k + 1);
                }
            })
        };
        while !owner.is_finished() {
            for row in table.rows() {
                let (a, b) = row.key();
                assert_eq!(b, !a, "a row is seen with its key");
            }
        }
        owner.join().unwrap();
        let sum: u64 = table.rows().map(|r| r.get(0)).sum();
        assert_eq!(sum, (1..=20_000).sum::<u64>());
    }
}
