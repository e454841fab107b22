//! Weights on 2 MB pages, by default (`QUANTBENCH_HUGE_PAGES=0` turns it off).
//!
//! A decode step streams every weight once. On 4 KB pages that is a page walk per 4 KB
//! and hardware prefetchers that stop at each page boundary; llama.cpp, which maps the
//! GGUF file, gets the page cache's large folios (2 MB mappings where the file system
//! keeps them). quantbench's weights live in anonymous memory, which Linux backs with
//! 2 MB pages only when asked (`transparent_hugepage = madvise`, the common default).
//!
//! [`WeightPages`] asks, before a byte is written: while a [`loading`] scope is open
//! (the model loader's, and the bandwidth probe's, whose yardstick must sit on the same
//! pages), every allocation of 2 MB or more is a mapping of its own, aligned to 2 MB and
//! marked `MADV_HUGEPAGE`, so the first write of each 2 MB faults in one huge page. No
//! copy, the same resident bytes (a fresh mapping is zero, so zeroed allocations are not
//! written at all), and allocations outside a scope (KV caches, activations) are
//! untouched. The binary installs it as its global allocator; a library user who does
//! not gets 4 KB pages, and the record says which: [`huge_page_bytes`] reads how much of
//! the weights sit on huge pages from `/proc/self/smaps`, after loading.
//!
//! Measured (#16, the 2-vCPU AMD EPYC Zen 4 VM, 2 threads): read in turn in one process
//! (`cargo run --release --example streaming -- FORMAT [gpt2] pages`, 10 passes over 1 GiB
//! each), the Llama 3.2 1B's MLP matrices stream 1-5% faster on 2 MB pages (median pass
//! ratios 1.012-1.051 over f32, f16, q8_0 and q4_k), GPT-2 small's from −6% to +7% by
//! shape (its 9 MB matrices: 0.94-0.99 at 3072 × 768 f32, 1.03-1.07 at 768 × 3072). The
//! load is faster, not slower: fewer page faults (the 1B's F16 GGUF 1.2-2.3 s against
//! 3.3-3.8 s, its F32 9.5 s against 12-25 s). Whole runs alternating the two settings
//! read from −27% to +43% on the 1B's F16 decode: the VM's phases, which is why the
//! in-process comparison is the one to trust. docs/speed.md has the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable that turns it off (`0`).
pub const ENV: &str = "QUANTBENCH_HUGE_PAGES";

/// Bytes of a huge page (x86-64's and aarch64's with 4 KB base pages).
pub const HUGE: usize = 2 << 20;

/// Parse a value of [`ENV`]; the error names the valid values.
pub fn parse(value: &str) -> Result<bool, String> {
    match value.trim() {
        "" | "1" => Ok(true),
        "0" => Ok(false),
        other => Err(format!(
            "{ENV}={other:?} is not a choice: use \"1\" (weights on 2 MB pages, the default) or \"0\" (4 KB pages)"
        )),
    }
}

/// Whether weights go on huge pages in this process (unless `ENV=0`; an invalid value is
/// rejected by the CLI before anything runs, and means on here).
pub fn enabled() -> bool {
    std::env::var(ENV).map_or(true, |v| parse(&v) != Ok(false))
}

/// Open [`loading`] scopes, over all threads.
static LOADING: AtomicUsize = AtomicUsize::new(0);

/// While alive, [`WeightPages`] puts allocations of [`HUGE`] bytes or more on huge pages.
#[must_use = "the scope ends when this is dropped"]
pub struct Loading(bool);

/// Open a scope in which large allocations go on huge pages (nothing when [`enabled`] is
/// false, or where [`WeightPages`] is not the global allocator).
pub fn loading() -> Loading {
    let on = enabled();
    if on {
        LOADING.fetch_add(1, Ordering::SeqCst);
    }
    Loading(on)
}

impl Drop for Loading {
    fn drop(&mut self) {
        if self.0 {
            LOADING.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Start addresses of the live huge-page mappings (0 = a free slot). A fixed table, as an
/// allocator cannot allocate its own bookkeeping; when it is full, allocations fall back
/// to the system allocator (4 KB pages), which is only slower.
const SLOTS: usize = 8192;
static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

fn register(start: usize) -> bool {
    STARTS.iter().any(|s| {
        s.load(Ordering::Relaxed) == 0
            && s.compare_exchange(0, start, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    })
}

/// Remove `start` from the table; whether it was there.
fn unregister(start: usize) -> bool {
    STARTS.iter().any(|s| {
        s.compare_exchange(start, 0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    })
}

fn is_mapping(ptr: *mut u8, size: usize) -> bool {
    size >= HUGE
        && (ptr as usize).is_multiple_of(HUGE)
        && STARTS
            .iter()
            .any(|s| s.load(Ordering::SeqCst) == ptr as usize)
}

#[cfg(target_os = "linux")]
fn map_huge(size: usize) -> Option<*mut u8> {
    let len = size.next_multiple_of(4096);
    // SAFETY: a fresh private anonymous mapping, trimmed to its 2 MB-aligned part; every
    // pointer stays inside what mmap returned.
    unsafe {
        let raw = libc::mmap(
            std::ptr::null_mut(),
            len + HUGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return None;
        }
        let raw = raw as usize;
        let start = raw.next_multiple_of(HUGE);
        if start > raw {
            libc::munmap(raw as *mut libc::c_void, start - raw);
        }
        let tail = raw + len + HUGE - (start + len);
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        // Refused (THP compiled out): still a valid mapping, on 4 KB pages.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        if !register(start) {
            libc::munmap(start as *mut libc::c_void, len);
            return None;
        }
        Some(start as *mut u8)
    }
}

#[cfg(not(target_os = "linux"))]
fn map_huge(_size: usize) -> Option<*mut u8> {
    None
}

#[cfg(target_os = "linux")]
fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: `ptr` is a mapping of `size` bytes (rounded to pages) made by map_huge and
    // just taken out of the table, so nothing else frees it.
    unsafe {
        libc::munmap(ptr as *mut libc::c_void, size.next_multiple_of(4096));
    }
}

#[cfg(not(target_os = "linux"))]
fn unmap(_ptr: *mut u8, _size: usize) {}

/// The global allocator that puts large allocations made inside a [`loading`] scope on
/// 2 MB pages, and hands everything else to the system allocator.
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: quantbench::kernel::pages::WeightPages = quantbench::kernel::pages::WeightPages;
/// ```
pub struct WeightPages;

impl WeightPages {
    fn huge(layout: Layout) -> Option<*mut u8> {
        if layout.size() >= HUGE && layout.align() <= HUGE && LOADING.load(Ordering::Relaxed) > 0 {
            map_huge(layout.size())
        } else {
            None
        }
    }
}

// SAFETY: every block is either a map_huge mapping (found in the table, freed by munmap
// exactly once) or the system allocator's, handed back to it with its own layout.
unsafe impl GlobalAlloc for WeightPages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::huge(layout) {
            Some(p) => p,
            // SAFETY: the caller's layout, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::huge(layout) {
            // A fresh anonymous mapping reads as zero, untouched.
            Some(p) => p,
            // SAFETY: as alloc.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE && (ptr as usize).is_multiple_of(HUGE) && unregister(ptr as usize)
        {
            unmap(ptr, layout.size());
        } else {
            // SAFETY: not ours, so the system allocator's, with the layout it was made with.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: new_size > 0 and, rounded up to the alignment,
        // does not overflow.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let ours = is_mapping(ptr, layout.size());
        let to_huge = Self::huge(new);
        if !ours && to_huge.is_none() {
            // SAFETY: the system allocator's block, resized by it.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a new block, the old one's bytes moved into it, then the old one freed.
        unsafe {
            let p = to_huge.unwrap_or_else(|| System.alloc(new));
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}

/// How many of the bytes in `extents` ((start, length) of each weight buffer) sit on huge
/// pages now, from `/proc/self/smaps`: for each mapping that holds some of them, its
/// `AnonHugePages`, at most the bytes of the extents inside it. 0 off Linux or where the
/// file cannot be read.
pub fn huge_page_bytes(extents: &[(usize, usize)]) -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let overlap = |lo: usize, hi: usize| -> u64 {
        extents
            .iter()
            .map(|&(s, l)| (s + l).min(hi).saturating_sub(s.max(lo)) as u64)
            .sum()
    };
    let mut total = 0u64;
    let mut inside = 0u64;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-').and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        }) {
            inside = overlap(lo, hi);
        } else if let Some(kb) = line.strip_prefix("AnonHugePages:") {
            let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            total += (kb * 1024).min(inside);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scope is process-wide: the tests that open one run one at a time.
    static SCOPES: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_switch_parses_and_names_the_valid_values() {
        assert_eq!((parse("1"), parse("")), (Ok(true), Ok(true)));
        assert_eq!(parse(" 0 "), Ok(false));
        let err = parse("yes").unwrap_err();
        assert!(
            err.contains("yes")
                && err.contains(ENV)
                && err.contains("\"1\"")
                && err.contains("\"0\""),
            "{err}"
        );
    }

    /// Inside a scope a large block is a 2 MB-aligned mapping of its own: it keeps what is
    /// written, reads zero when asked zeroed, moves its bytes when it grows, shrinks or
    /// leaves for the system allocator, and is unmapped when freed; small blocks and
    /// blocks made outside a scope are the system allocator's.
    #[test]
    fn large_blocks_in_a_scope_are_huge_page_mappings() {
        if !enabled() {
            return; // QUANTBENCH_HUGE_PAGES=0 in this environment: nothing to test
        }
        let _one = SCOPES.lock().unwrap_or_else(|e| e.into_inner());
        let a = WeightPages;
        let big = Layout::from_size_align(3 * HUGE + 12_345, 8).unwrap();
        let small = Layout::from_size_align(HUGE - 1, 8).unwrap();
        // SAFETY: every block is used within its layout and freed once with it.
        unsafe {
            let outside = a.alloc(big);
            assert!(!is_mapping(outside, big.size()));
            a.dealloc(outside, big);

            let scope = loading();
            let p = a.alloc(big);
            assert!(is_mapping(p, big.size()) && (p as usize).is_multiple_of(HUGE));
            for i in 0..big.size() {
                *p.add(i) = (i * 31 % 251) as u8;
            }
            let s = a.alloc(small);
            assert!(!is_mapping(s, small.size()));
            a.dealloc(s, small);
            let z = a.alloc_zeroed(big);
            assert!(is_mapping(z, big.size()));
            assert!((0..big.size()).step_by(4093).all(|i| *z.add(i) == 0));
            a.dealloc(z, big);
            assert!(!is_mapping(z, big.size()), "freed mappings leave the table");

            // Grow: a new mapping with the old bytes.
            let grown = a.realloc(p, big, big.size() + HUGE);
            let grown_layout = Layout::from_size_align(big.size() + HUGE, 8).unwrap();
            assert!(is_mapping(grown, grown_layout.size()) && !is_mapping(p, big.size()));
            assert!((0..big.size()).all(|i| *grown.add(i) == (i * 31 % 251) as u8));
            drop(scope);
            // Shrink below 2 MB outside the scope: back to the system allocator, bytes kept.
            let shrunk = a.realloc(grown, grown_layout, 1000);
            assert!((0..1000).all(|i| *shrunk.add(i) == (i * 31 % 251) as u8));
            a.dealloc(shrunk, Layout::from_size_align(1000, 8).unwrap());
        }
    }

    /// What the record reports: at most the bytes asked about, in whole huge pages, and
    /// where Linux gives huge pages on request (`madvise` or `always`), some of them.
    #[test]
    fn huge_page_bytes_reads_the_mappings_of_the_weights() {
        let _one = SCOPES.lock().unwrap_or_else(|e| e.into_inner());
        let a = WeightPages;
        let layout = Layout::from_size_align(8 * HUGE, 64).unwrap();
        let scope = loading();
        // SAFETY: written within its layout, freed once.
        unsafe {
            let p = a.alloc(layout);
            std::ptr::write_bytes(p, 7, layout.size());
            let got = huge_page_bytes(&[(p as usize, layout.size())]);
            assert!(
                got <= layout.size() as u64 && got.is_multiple_of(HUGE as u64),
                "{got}"
            );
            let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .unwrap_or_default();
            // Without direct compaction (`defrag` of `defer` or `never`) a fault may take
            // 4 KB pages when memory is fragmented.
            let defrag = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/defrag")
                .unwrap_or_default();
            let compacts = ["[always]", "[madvise]", "[defer+madvise]"]
                .iter()
                .any(|d| defrag.contains(d));
            if cfg!(target_os = "linux")
                && enabled()
                && !thp.contains("[never]")
                && !thp.is_empty()
                && compacts
            {
                assert!(
                    got > 0,
                    "no huge pages for an advised 16 MB block ({thp:?})"
                );
            }
            a.dealloc(p, layout);
        }
        drop(scope);
    }
}
