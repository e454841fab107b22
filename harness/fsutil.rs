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
}
