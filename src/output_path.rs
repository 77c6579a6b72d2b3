//! Claiming the path a long run will write (`run --save-state`) before the run starts:
//! it must be a path [`write_atomically`](crate::atomic_file::write_atomically) may
//! replace, none of the run's inputs, writable, on a file system with room for it, and
//! no other run may be writing it. A wrong path is then found in a second rather than
//! after hours of streaming, and two runs never interleave checkpoints in one file.
//!
//! The lock is an advisory `flock` on a lock file beside the output, `.NAME.lock`
//! (holding the pid of its owner for the message of a run refused): the output itself
//! cannot carry it, since every save renames a new file over it, and its directory
//! would lock every output in it. The kernel releases the lock when the process dies,
//! so a crash never leaves the path locked.

use std::fs::{File, Metadata};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::atomic_file::{check_target, check_writable};
use crate::error::{Error, Result};
use crate::input_file::{canonical_name, same_file};

/// A path claimed for writing: checked, and locked against other runs until dropped.
#[derive(Debug)]
pub struct OutputPath {
    path: PathBuf,
    lock_path: PathBuf,
    lock: File,
}

/// An input of a run that its output must not replace: what it is (e.g. `the context
/// file`) and its path.
pub type Input<'a> = (&'a str, &'a Path);

impl OutputPath {
    /// Claims `path`: refuses anything but an absent path or a regular file, any of
    /// `inputs` (by canonical path, and by device and inode where both exist, which
    /// catches hard links), a path that cannot be written, and a path another run has
    /// claimed ([`Error::Busy`]).
    pub fn claim(path: &Path, inputs: &[Input<'_>]) -> Result<Self> {
        check_target(path)?;
        check_not_input(path, inputs)?;
        check_writable(path)?;
        let lock_path = lock_path(path);
        let lock = lock(path, &lock_path)?;
        Ok(OutputPath {
            path: path.to_path_buf(),
            lock_path,
            lock,
        })
    }

    /// The claimed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails unless the file system of the path has room for a file of `file_bytes`
    /// written through a temporary file; with `checkpoints` a checkpoint is written
    /// beside the last one, so two such files must fit at once.
    pub fn check_space(&self, file_bytes: u64, checkpoints: bool) -> Result<()> {
        let existing = std::fs::symlink_metadata(&self.path).map_or(0, |m| m.len());
        let needed = space_needed(file_bytes, existing, checkpoints);
        let Some(free) = free_bytes(&self.path) else {
            return Ok(());
        };
        if needed > free {
            return Err(Error::File {
                path: self.path.clone(),
                problem: format!(
                    "needs {needed} bytes free for the state ({file_bytes} bytes a file{}), but its \
                     file system has only {free} bytes free",
                    if checkpoints {
                        ", and a checkpoint is written beside the last one"
                    } else {
                        ""
                    }
                ),
            });
        }
        Ok(())
    }
}

impl Drop for OutputPath {
    fn drop(&mut self) {
        // Removed while still locked, and only if the name is still this lock file: a
        // run that opened it meanwhile finds it unlinked once it gets the lock and
        // starts again on a fresh one (see `lock`).
        if let (Ok(on_disk), Ok(held)) = (
            std::fs::symlink_metadata(&self.lock_path),
            self.lock.metadata(),
        ) {
            if same_file(&on_disk, &held) {
                let _ = std::fs::remove_file(&self.lock_path);
            }
        }
    }
}

/// The space a save of `file_bytes` needs beyond what is used now, where a file of
/// `existing` bytes is at the path: the temporary file while the old file is still
/// there; with checkpoints, at the worst moment, the last checkpoint and the next.
fn space_needed(file_bytes: u64, existing: u64, checkpoints: bool) -> u64 {
    if checkpoints {
        file_bytes.max((2 * file_bytes).saturating_sub(existing))
    } else {
        file_bytes
    }
}

/// Bytes an unprivileged process may still write on the file system of `path`'s
/// directory; `None` where that cannot be told. `LTM_FAULT=free-bytes:N` pretends N,
/// for the tests of a full disk.
fn free_bytes(path: &Path) -> Option<u64> {
    if let Some(n) = std::env::var("LTM_FAULT")
        .ok()
        .and_then(|v| v.strip_prefix("free-bytes:")?.parse().ok())
    {
        return Some(n);
    }
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid NUL-terminated path and a struct statvfs to fill.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

fn check_not_input(path: &Path, inputs: &[Input<'_>]) -> Result<()> {
    let name = canonical_name(path);
    let meta = std::fs::metadata(path).ok();
    for (what, input) in inputs {
        let same_name = name.is_some() && input.canonicalize().ok() == name;
        let same_inode = match (&meta, std::fs::metadata(input)) {
            (Some(a), Ok(b)) => same_file(a, &b),
            _ => false,
        };
        if same_name || same_inode {
            return Err(Error::File {
                path: path.to_path_buf(),
                problem: format!(
                    "is {what} ({}); an output must not replace an input of the run",
                    input.display()
                ),
            });
        }
    }
    Ok(())
}

/// `dir/.NAME.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.lock"))
}

/// Takes the lock file of `path` (without waiting), and writes this process's pid in it.
fn lock(path: &Path, lock_path: &Path) -> Result<File> {
    let io = |e: std::io::Error| Error::io(lock_path, e);
    // A lock file unlinked by its previous owner between our open and our lock is
    // locked in vain: start again on the name's new file. Twice is already rare.
    for _ in 0..8 {
        let mut options = File::options();
        options.read(true).write(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        }
        let mut file = options.open(lock_path).map_err(io)?;
        let held = file.metadata().map_err(io)?;
        if !held.is_file() {
            return Err(Error::File {
                path: lock_path.to_path_buf(),
                problem: format!(
                    "is a {}, expected the lock file of {}",
                    crate::input_file::file_kind(&held),
                    path.display()
                ),
            });
        }
        if !try_lock(&file).map_err(io)? {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Error::Busy {
                path: path.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        let still_ours = std::fs::symlink_metadata(lock_path)
            .map(|m: Metadata| same_file(&m, &held))
            .unwrap_or(false);
        if !still_ours {
            continue;
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        return Ok(file);
    }
    Err(Error::File {
        path: lock_path.to_path_buf(),
        problem: "kept being replaced while being locked".into(),
    })
}

/// `flock(LOCK_EX | LOCK_NB)`: `false` where another open file holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a valid open descriptor; flock touches nothing else.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(false);
        }
        Err(e)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_path_is_refused_to_a_second_claim_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("s.ltmstate");
        let first = OutputPath::claim(&out, &[]).unwrap();
        let e = OutputPath::claim(&out, &[]).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("s.ltmstate"), "{e}");
        drop(first);
        assert!(!lock_path(&out).exists(), "the lock file was left behind");
        OutputPath::claim(&out, &[]).unwrap();
    }

    #[test]
    fn inputs_are_refused_by_name_and_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx.txt");
        std::fs::write(&ctx, b"text").unwrap();
        let twin = dir.path().join("twin.txt");
        std::fs::hard_link(&ctx, &twin).unwrap();
        let dotted = dir.path().join(".").join("ctx.txt");
        for out in [&ctx, &twin, &dotted] {
            let e = OutputPath::claim(out, &[("the context file", &ctx)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("is the context file"), "{e}");
        }
        OutputPath::claim(&dir.path().join("new"), &[("the context file", &ctx)]).unwrap();
        assert_eq!(std::fs::read(&ctx).unwrap(), b"text");
    }

    #[test]
    fn space_for_the_temporary_file_and_for_two_checkpoints_is_needed() {
        assert_eq!(space_needed(100, 0, false), 100);
        assert_eq!(space_needed(100, 100, false), 100);
        assert_eq!(space_needed(100, 0, true), 200);
        assert_eq!(space_needed(100, 100, true), 100);
        assert_eq!(space_needed(100, 30, true), 170);
        let dir = tempfile::tempdir().unwrap();
        let claim = OutputPath::claim(&dir.path().join("s"), &[]).unwrap();
        claim.check_space(1, true).unwrap();
        let e = claim
            .check_space(u64::MAX / 4, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("needs {} bytes", u64::MAX / 4)), "{e}");
    }
}
