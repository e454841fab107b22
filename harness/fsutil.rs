//! Reading the user's files safely: only regular files, never more than a stated size,
//! a UTF-8 byte-order mark accepted, and errors that name the path and say what is wrong
//! with it (a symlink loop, a device, a folder, too large) instead of "not found".

use std::path::{Path, PathBuf};

use crate::error::InputError;

/// Results files, scenarios and config files are text of a few megabytes at most.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// What is at `path`, in words, when it is not a regular file we can read; `None` when
/// it is a regular file (following symlinks).
pub fn not_a_regular_file(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) if m.is_dir() => Some("is a folder, not a file".into()),
        Ok(_) => Some("is not a regular file (a device, pipe or socket)".into()),
        Err(e) => Some(match std::fs::symlink_metadata(path) {
            Ok(l) if l.file_type().is_symlink() => {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    "is a symbolic link that loops (too many levels of symbolic links)".into()
                } else {
                    format!("is a symbolic link that does not resolve ({e})")
                }
            }
            _ if e.kind() == std::io::ErrorKind::NotFound => "does not exist".into(),
            _ => format!("cannot be read: {e}"),
        }),
    }
}

/// Whether anything (a file, a folder, a broken or looping link) is at `path`.
pub fn exists_at_all(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Read a text file the user named: a regular file of at most `max` bytes, UTF-8, with
/// a leading byte-order mark dropped. `what` says what the file is for ("results file").
pub fn read_text(path: &Path, what: &str, max: u64) -> Result<String, InputError> {
    if let Some(problem) = not_a_regular_file(path) {
        return Err(InputError::new(format!(
            "cannot read {what} {}: it {problem}",
            path.display()
        )));
    }
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if len > max {
        return Err(InputError::new(format!(
            "cannot read {what} {}: it is {len} bytes, more than the {max} bytes a {what} may be",
            path.display()
        )));
    }
    use std::io::Read;
    let mut bytes = Vec::with_capacity(len as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(|e| InputError::new(format!("cannot read {what} {}: {e}", path.display())))?;
    if bytes.len() as u64 > max {
        return Err(InputError::new(format!(
            "cannot read {what} {}: it grew past the {max} bytes a {what} may be",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        InputError::new(format!(
            "cannot read {what} {}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(strip_bom(&text).to_string())
}

/// `text` without a leading UTF-8 byte-order mark.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Make `dir` (and its parents) for writing outputs into; the error names the path and
/// what is in the way.
pub fn create_output_dir(dir: &Path) -> Result<(), InputError> {
    if let Ok(m) = std::fs::symlink_metadata(dir) {
        if m.file_type().is_symlink() {
            if let Some(problem) = broken_link(dir) {
                return Err(InputError::new(format!(
                    "cannot write into {}: it {problem}",
                    dir.display()
                )));
            }
        }
        if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
            return Err(InputError::new(format!(
                "cannot write into {}: it is a file, not a folder",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        // Name the first ancestor that is in the way, if one is.
        let mut blocker: Option<PathBuf> = None;
        for a in dir.ancestors().skip(1) {
            if exists_at_all(a) {
                if std::fs::metadata(a).is_ok_and(|m| !m.is_dir()) {
                    blocker = Some(a.to_path_buf());
                }
                break;
            }
        }
        match blocker {
            Some(b) => InputError::new(format!(
                "cannot create output folder {}: {} is a file, not a folder",
                dir.display(),
                b.display()
            )),
            None => InputError::new(format!(
                "cannot create output folder {}: {e}",
                dir.display()
            )),
        }
    })
}

/// Why a symbolic link does not lead anywhere, if it does not.
fn broken_link(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(_) => None,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            Some("is a symbolic link that loops (too many levels of symbolic links)".into())
        }
        Err(e) => Some(format!("is a symbolic link that does not resolve ({e})")),
    }
}

/// Whether `a` and `b` are the same file (device and inode), however spelled.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Whether the file at `path` is a quantbench results file (by name, or by what it
/// holds: a JSON object with `schema_version` and `variants`).
pub fn is_results_file(path: &Path) -> bool {
    if path.file_name().is_some_and(|n| n == "results.json") {
        return true;
    }
    let Ok(m) = std::fs::metadata(path) else {
        return false;
    };
    if !m.is_file() || m.len() > MAX_TEXT_BYTES {
        return false;
    }
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("schema_version").is_some() && v.get("variants").is_some())
}

/// Check a file a command is about to write where the user said: nothing but a regular
/// file may be replaced, never a results file, and an existing file only with
/// `force`. `flag` names the option in errors ("--out").
pub fn check_replaceable(path: &Path, flag: &str, force: bool) -> Result<(), InputError> {
    let Ok(link) = std::fs::symlink_metadata(path) else {
        return Ok(()); // nothing there
    };
    if !link.is_file() {
        let what = not_a_regular_file(path).unwrap_or_else(|| {
            "is a symbolic link; quantbench replaces only regular files".to_string()
        });
        return Err(InputError::new(format!(
            "{flag} {} {what}; name a new file (nothing but a regular file is ever replaced)",
            path.display()
        )));
    }
    if is_results_file(path) {
        return Err(InputError::new(format!(
            "{flag} {} is a quantbench results file; it is never replaced (its run would be lost): name another file",
            path.display()
        )));
    }
    if !force {
        return Err(InputError::new(format!(
            "{flag} {} exists; name a new file, or pass --force to replace it",
            path.display()
        )));
    }
    Ok(())
}

/// Every temporary a quantbench writer keeps while it works is named
/// `.quantbench-<what>-<pid>-<n>.part` and holds an advisory lock (flock) for as long as
/// its writer lives: a file (or folder) so named whose lock is free and whose process is
/// gone was left by a writer that was killed, and any later writer in that folder
/// removes it ([`sweep_stale_parts`]).
const PART_PREFIX: &str = ".quantbench-";
const PART_SUFFIX: &str = ".part";

fn part_name(what: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{PART_PREFIX}{what}-{}-{}{PART_SUFFIX}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Take `f`'s advisory lock without waiting: whether it was free.
fn try_lock(f: &std::fs::File) -> bool {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor the caller owns for the call's duration.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Whether process `pid` is alive (signal 0 reaches it, or it exists under another user).
fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// A temporary file a writer fills before renaming it over its target: created new in
/// the target's folder with the umask's permissions (as any file the user creates),
/// locked while it lives, removed when dropped unless [`PartFile::persist`]ed.
pub struct PartFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl PartFile {
    /// A new part file in `dir`, for `what` ("export", "reference"); stale parts in
    /// `dir` are swept first.
    pub fn create(dir: &Path, what: &str) -> Result<Self, InputError> {
        sweep_stale_parts(dir);
        let path = dir.join(part_name(what));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| InputError::new(format!("cannot write into {}: {e}", dir.display())))?;
        try_lock(&file);
        Ok(PartFile {
            path,
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &std::fs::File {
        self.file.as_ref().expect("present until persisted")
    }

    /// Sync it and rename it over `target`.
    pub fn persist(mut self, target: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        self.file()
            .sync_all()
            .with_context(|| format!("writing {}", self.path.display()))?;
        std::fs::rename(&self.path, target).with_context(|| {
            format!(
                "moving {} into place as {}",
                self.path.display(),
                target.display()
            )
        })?;
        self.file = None;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A temporary folder a writer fills before moving its files into place; locked while
/// it lives, removed with what is left in it when dropped.
pub struct PartDir {
    path: PathBuf,
    _lock: std::fs::File,
}

impl PartDir {
    /// A new part folder in `dir`, for `what`; stale parts in `dir` are swept first.
    pub fn create(dir: &Path, what: &str) -> Result<Self, InputError> {
        sweep_stale_parts(dir);
        let path = dir.join(part_name(what));
        let fail = |e: std::io::Error| {
            InputError::new(format!("cannot write into {}: {e}", dir.display()))
        };
        std::fs::create_dir(&path).map_err(fail)?;
        let lock = std::fs::File::open(&path).map_err(fail)?;
        try_lock(&lock);
        Ok(PartDir { path, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PartDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Remove the parts in `dir` that killed writers left (see [`PartFile`]); returns them.
pub fn sweep_stale_parts(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix(PART_PREFIX)
            .and_then(|r| r.strip_suffix(PART_SUFFIX))
        else {
            continue;
        };
        // <what>-<pid>-<n>
        let mut fields = rest.rsplitn(3, '-');
        let (_, pid) = (fields.next(), fields.next());
        let Some(pid) = pid.and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.file_type().is_symlink() || process_alive(pid) {
            continue;
        }
        let Ok(f) = std::fs::File::open(&path) else {
            continue;
        };
        if !try_lock(&f) {
            continue;
        }
        let gone = if m.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_folders_loops_and_large_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_text(Path::new("/dev/zero"), "results file", 1 << 20).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_text(dir.path(), "results file", 1 << 20).unwrap_err();
        assert!(e.to_string().contains("is a folder"), "{e}");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = read_text(&a, "results file", 1 << 20).unwrap_err();
        assert!(e.to_string().contains("loops"), "{e}");
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; 2000]).unwrap();
        let e = read_text(&big, "results file", 1000).unwrap_err();
        assert!(e.to_string().contains("2000 bytes"), "{e}");
        let bom = dir.path().join("bom.json");
        std::fs::write(&bom, "\u{feff}{}").unwrap();
        assert_eq!(read_text(&bom, "config", 1000).unwrap(), "{}");
        let e = create_output_dir(&a).unwrap_err();
        assert!(e.to_string().contains("loops"), "{e}");
        let e = create_output_dir(&big.join("sub")).unwrap_err();
        assert!(e.to_string().contains("is a file, not a folder"), "{e}");
    }

    /// A killed writer's part (its lock free, its process gone) is swept by the next
    /// writer in the folder; a live writer's part is kept; parts take the umask.
    #[test]
    fn stale_parts_are_swept_and_live_ones_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // pid 0x7fff_fff0 does not exist.
        let stale = dir.path().join(".quantbench-export-2147483632-0.part");
        std::fs::write(&stale, b"half").unwrap();
        let stale_dir = dir.path().join(".quantbench-export-2147483632-1.part");
        std::fs::create_dir(&stale_dir).unwrap();
        std::fs::write(stale_dir.join("model.safetensors"), b"half").unwrap();
        let live = PartFile::create(dir.path(), "export").unwrap();
        assert!(!stale.exists() && !stale_dir.exists());
        let other = PartDir::create(dir.path(), "export").unwrap();
        assert!(live.path().exists(), "a live part is kept");
        let mode = std::fs::metadata(live.path()).unwrap().permissions().mode() & 0o777;
        // SAFETY: umask only reads and sets this process's mask.
        let mask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        assert_eq!(mode, 0o666 & !(mask as u32), "{mode:o}");
        let target = dir.path().join("out.gguf");
        let part = live.path().to_path_buf();
        live.persist(&target).unwrap();
        assert!(target.exists() && !part.exists());
        let p = other.path().to_path_buf();
        drop(other);
        assert!(!p.exists());
        // A user's own file that merely looks alike is never touched.
        let own = dir.path().join(".quantbench-notes.part");
        std::fs::write(&own, b"mine").unwrap();
        assert!(sweep_stale_parts(dir.path()).is_empty() && own.exists());
    }
}
