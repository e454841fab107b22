//! This process's resident memory, through sysinfo (every OS sysinfo supports).

use std::collections::BTreeMap;
use std::sync::Mutex;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::Probe;

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
            out.insert("process_rss_bytes".to_string(), p.memory());
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

/// One malloc arena for the whole process (glibc), so that memory any thread frees can be
/// returned at cleanup. With glibc's per-thread arenas, what the worker threads allocated
/// while quantizing in parallel stayed resident in their arenas after the model was
/// dropped: on synthetic:tiny the next variant's "before load" started 28 MB higher, and
/// "after load" figures were inflated by the same. Called by `main` and `runner::run`;
/// later calls change nothing.
pub fn use_one_allocator_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
