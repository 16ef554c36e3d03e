//! The process-wide metrics recorder does not hold on to histogram
//! samples when nobody scrapes `/metrics`. A test binary of its own: it
//! installs a global allocator that counts the bytes allocated and not yet
//! freed, and the recorder is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Bytes allocated through the global allocator and not yet freed.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; only the counter
// is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc`, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Successful requests recorded: held one by one, 8 bytes each or more,
/// they would keep at least 16 MB.
const SAMPLES: usize = 2_000_000;

/// What may stay allocated once the upkeep has run, in bytes: the
/// histogram's buckets and the recorder's registry, far below the samples.
const LEFT_AFTER_UPKEEP_BYTES: usize = 2 * 1024 * 1024;

/// Requests recorded every 20 ms while waiting for the upkeep.
const TRICKLE_SAMPLES: usize = 200;

#[test]
fn unscraped_latency_samples_are_folded_into_buckets_and_freed() {
    dynaraft_api::metrics::install();
    // The first records register the family and its labels.
    dynaraft_api::metrics::request("GetItem", 200, None, Duration::from_micros(300));
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for i in 0..SAMPLES {
        let took = Duration::from_micros(100 + (i % 5_000) as u64);
        dynaraft_api::metrics::request("GetItem", 200, None, took);
    }
    let grown = |now: usize| now.saturating_sub(before);
    let deadline =
        Instant::now() + Duration::from_millis(10 * dynaraft_api::metrics::UPKEEP_INTERVAL_MS);
    let mut trickle = 0;
    loop {
        // A server keeps answering while it waits: its recording threads
        // are also what lets the recorder's freed blocks be reclaimed
        // (they are handed to crossbeam's epoch collector).
        for _ in 0..TRICKLE_SAMPLES {
            dynaraft_api::metrics::request("GetItem", 200, None, Duration::from_micros(300));
        }
        trickle += TRICKLE_SAMPLES;
        let held = grown(LIVE_BYTES.load(Ordering::Relaxed));
        if held <= LEFT_AFTER_UPKEEP_BYTES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held} bytes still held for {SAMPLES} unscraped samples after ten upkeep intervals"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And the samples were counted, not dropped.
    let page = dynaraft_api::metrics::render().expect("the recorder is installed");
    let count = page
        .lines()
        .find(|l| {
            l.starts_with("dynaraft_successful_request_latency_seconds_count")
                && l.contains("operation=\"GetItem\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(count, Some(SAMPLES + 1 + trickle), "{page}");
}
