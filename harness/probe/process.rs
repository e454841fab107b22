//! This process's resident memory, through sysinfo (every OS sysinfo supports).

use std::collections::BTreeMap;
use std::sync::Mutex;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::Probe;

/// The reading of the process's resident memory, bytes: the figure every memory column,
/// compare's and history's memory figures and the budget check read.
pub const RSS: &str = "process_rss_bytes";

pub struct ProcessProbe {
    pid: Pid,
    sys: Mutex<System>,
}

impl ProcessProbe {
    pub fn new() -> Self {
        ProcessProbe {
            pid: sysinfo::get_current_pid().expect("the current pid"),
            sys: Mutex::new(System::new()),
        }
    }
}

impl Default for ProcessProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl Probe for ProcessProbe {
    fn name(&self) -> &str {
        "process"
    }

    fn read(&self) -> BTreeMap<String, u64> {
        let mut sys = self.sys.lock().expect("probe lock");
        sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            false,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let mut out = BTreeMap::new();
        if let Some(p) = sys.process(self.pid) {
            out.insert(RSS.to_string(), p.memory());
        }
        out
    }
}

/// Give freed heap memory back to the OS (glibc keeps it otherwise), so that memory
/// "after cleanup" measures what the program still holds, not the allocator's cache.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// glibc's allocator set up for honest and fast measurement. Called by `main` and
/// `runner::run`; later calls change nothing.
///
/// - One malloc arena for the whole process, so that memory any thread frees can be
///   returned at cleanup. With glibc's per-thread arenas, what the worker threads
///   allocated while quantizing in parallel stayed resident in their arenas after the
///   model was dropped: on synthetic:tiny the next variant's "before load" started 28 MB
///   higher, and "after load" figures were inflated by the same.
/// - Freed buffers up to 32 MB (glibc's largest mmap threshold) kept in the heap rather
///   than unmapped, and the heap not trimmed as it goes: a prompt's pass through candle's
///   ops allocates every intermediate tensor afresh (up to tens of MB each), and mapping
///   them anew each time cost a page fault per 4 kB page, zeroed by the kernel — 13.7% of
///   a GPT-2 Q4_K_M pp512 profile (`perf record --call-graph dwarf`). Every memory
///   reading is taken after [`release_freed_memory`], which returns those pages to the
///   OS, so the readings count what is held, not this cache.
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
