//! Writing files so that a crash never leaves a half-written one under the final name.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `path` through `fill` into a temporary file beside it, flushes it to disk,
/// then renames it over `path`. If anything fails or the process dies first, `path`
/// keeps its previous content. Only an absent path or a regular file is replaced
/// ([`check_target`], checked before writing and again right before the rename).
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    check_target(path)?;
    let tmp = temp_path(path);
    remove_stale_temps(path);
    let io = |e: std::io::Error| Error::io(path, e);
    let result = (|| {
        let file = create_temp(&tmp).map_err(io)?;
        let mut w = BufWriter::new(file);
        fill(&mut w).map_err(io)?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        fault_point();
        file.sync_all().map_err(io)?;
        // Again at the last moment: what is at `path` may have changed during a long
        // run, and a rename replaces whatever is there, a device or a symlink too.
        check_target(path)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename itself durable; not all platforms allow opening a directory.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fails unless a file can be written at `path` (beside it, the temporary file is
/// created and removed again): for outputs written only after a long run, so a wrong
/// path is found before the run rather than after it.
pub fn check_writable(path: &Path) -> Result<()> {
    check_target(path)?;
    let tmp = temp_path(path);
    create_temp(&tmp).map_err(|e| Error::File {
        path: path.to_path_buf(),
        problem: format!("cannot be written: {e}"),
    })?;
    let _ = fs::remove_file(&tmp);
    Ok(())
}

/// Fails unless `path` is a file this program may replace: absent, or a regular file.
/// A rename replaces any directory entry, so without this check an output naming a
/// device (`/dev/null`, run as root), a FIFO, a socket or a symlink would be replaced
/// by a regular file. A symlink is refused rather than followed: whoever planted it
/// chose where a root process would write.
pub fn check_target(path: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let refuse = |problem: String| {
        Err(Error::File {
            path: path.to_path_buf(),
            problem,
        })
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).map_or("?".into(), |t| t.display().to_string());
        return refuse(format!(
            "is a symlink to {target}; an output is not written through a symlink \
             (give the path of the file itself)"
        ));
    }
    if meta.is_dir() {
        return refuse("is a directory; expected the path of a file to write".into());
    }
    if !meta.is_file() {
        return refuse(format!(
            "is a {}; an output must be a regular file or a path that does not exist yet",
            crate::input_file::file_kind(&meta)
        ));
    }
    Ok(())
}

/// Creates the temporary file `tmp` anew (`O_EXCL`): an entry already there, such as a
/// symlink planted at the predictable name, is removed, never followed.
fn create_temp(tmp: &Path) -> std::io::Result<File> {
    let create = || File::options().write(true).create_new(true).open(tmp);
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            create()
        }
        other => other,
    }
}

/// Removes temporary files of earlier writes of `path` whose process is gone (killed
/// between creating and renaming): at a state's size each, a few crashes would fill a
/// disk. A file of a process still alive is left alone: it may be writing it now.
fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.tmp.");
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` exists (where that cannot be told, it is taken to exist, so
/// nothing is removed).
fn process_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return true;
        };
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        true
    }
}

/// `dir/.name.tmp.PID`: same directory (so the rename stays on one file system),
/// unique per process.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Convenience for `write_atomically` of one byte buffer.
pub fn write_bytes_atomically(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    write_atomically(path, |w| w.write_all(bytes))
}

/// Fault injection for the crash tests: with `LTM_FAULT=abort-before-rename` the
/// process dies after writing the temporary file and before the rename, the worst
/// moment for a crash. Costs one environment lookup per file written.
fn fault_point() {
    if std::env::var_os("LTM_FAULT").is_some_and(|v| v == "abort-before-rename") {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn only_absent_paths_and_regular_files_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (path, needle) in [
            (&link, "is a symlink to"),
            (&fifo, "FIFO"),
            (&socket, "socket"),
            (&dir.path().to_path_buf(), "directory"),
        ] {
            for e in [
                write_bytes_atomically(path, b"new").unwrap_err(),
                check_writable(path).unwrap_err(),
            ] {
                assert!(e.to_string().contains(needle), "{e}");
            }
        }
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        let e = check_writable(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        write_bytes_atomically(&target, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            4,
            "a temp file was left"
        );
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let out = dir.path().join("out");
        std::os::unix::fs::symlink(&victim, temp_path(&out)).unwrap();
        write_bytes_atomically(&out, b"state").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(&out).unwrap(), b"state");
    }
}
