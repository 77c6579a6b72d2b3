//! Writing files so that a crash never leaves a half-written one under the final name.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `path` through `fill` into a temporary file beside it, flushes it to disk,
/// then renames it over `path`. If anything fails or the process dies first, `path`
/// keeps its previous content.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    remove_stale_temps(path);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        fault_point();
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename itself durable; not all platforms allow opening a directory.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Fails unless a file can be written at `path` (beside it, the temporary file is
/// created and removed again): for outputs written only after a long run, so a wrong
/// path is found before the run rather than after it.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::File {
            path: path.to_path_buf(),
            problem: "is a directory; expected the path of a file to write".into(),
        });
    }
    let tmp = temp_path(path);
    File::create(&tmp).map_err(|e| Error::File {
        path: path.to_path_buf(),
        problem: format!("cannot be written: {e}"),
    })?;
    let _ = fs::remove_file(&tmp);
    Ok(())
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
