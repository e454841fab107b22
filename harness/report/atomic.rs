//! Files appear whole or not at all: written beside their target, synced, then renamed
//! over it, so a crash or a full disk never leaves a half-written result.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A temporary path beside `target`, in the same directory (so rename is atomic).
pub fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Keep the extension last: chart backends pick the image format from it.
    target.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

/// Refuse a target that is there and is not a regular file (a folder, a device, a
/// pipe, a socket, a symbolic link): renaming over it would replace it.
pub fn check_target(target: &Path) -> Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(target) {
        if !m.is_file() {
            let what = crate::fsutil::not_a_regular_file(target)
                .unwrap_or_else(|| "is a symbolic link".to_string());
            return Err(crate::InputError::new(format!(
                "cannot write {}: it {what}, and only a regular file is ever replaced",
                target.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Write `bytes` to `target` atomically; a target that is not a regular file is refused.
pub fn write(target: &Path, bytes: &[u8]) -> Result<()> {
    check_target(target)?;
    let tmp = temp_beside(target);
    let result = (|| -> Result<()> {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        Ok(())
    })();
    finish(&tmp, target, result)
}

/// Rename a finished temporary file over `target`, or remove it when `result` failed.
pub fn finish(tmp: &Path, target: &Path, result: Result<()>) -> Result<()> {
    match result {
        Ok(()) => std::fs::rename(tmp, target)
            .with_context(|| format!("renaming {} to {}", tmp.display(), target.display())),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("results.json");
        write(&t, b"first").unwrap();
        write(&t, b"second").unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    /// A full disk, simulated: the temporary file is a link to /dev/full, where every
    /// write fails with "no space left on device".
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("results.json");
        write(&t, b"previous, complete results").unwrap();
        std::os::unix::fs::symlink("/dev/full", temp_beside(&t)).unwrap();
        let err = write(&t, &vec![b'x'; 1 << 16]).unwrap_err();
        assert!(format!("{err:#}").contains("No space left"), "{err:#}");
        assert_eq!(std::fs::read(&t).unwrap(), b"previous, complete results");
        assert!(!temp_beside(&t).exists(), "the temporary is removed");
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("results.json");
        write(&t, b"good").unwrap();
        let tmp = temp_beside(&t);
        std::fs::write(&tmp, b"half").unwrap();
        let err = finish(&tmp, &t, Err(anyhow::anyhow!("disk full")));
        assert!(err.is_err());
        assert_eq!(std::fs::read(&t).unwrap(), b"good");
        assert!(!tmp.exists());
    }
}
