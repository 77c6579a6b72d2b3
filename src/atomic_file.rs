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
