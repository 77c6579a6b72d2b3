//! Opening the files a run reads: every input must be a regular file, checked before it
//! is opened (opening a FIFO already blocks, a device such as `/dev/zero` never ends)
//! and again on the opened descriptor (so a file swapped for another between the two
//! is caught), and a file read whole must be within a limit fitting its kind, checked
//! before reading. A symlink that leads nowhere is named as such, not as a missing file.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Most bytes of a `config.json`: published configs are a few KiB.
pub const CONFIG_JSON_MAX: u64 = 4 << 20;
/// Most bytes of a `tokenizer.json`: the largest published vocabularies (256K tokens
/// with their merges) take about 35 MiB.
pub const TOKENIZER_JSON_MAX: u64 = 64 << 20;
/// Most bytes of a `model.safetensors.index.json`: about 100 bytes per tensor name.
pub const INDEX_JSON_MAX: u64 = 16 << 20;
/// Most bytes of a HashHop `targets.json`: tens of bytes per hop of every query.
pub const TARGETS_JSON_MAX: u64 = 256 << 20;

/// The metadata of `path`, which must be a regular file (a symlink to one is followed).
/// Nothing is opened.
pub fn regular_file(path: &Path) -> Result<Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| unreachable_target(path, e))?;
    let kind = file_kind(&meta);
    if kind != "regular file" {
        return Err(Error::File {
            path: path.to_path_buf(),
            problem: format!("{}{kind}, not a regular file", through_link(path)),
        });
    }
    Ok(meta)
}

/// Opens `path` for reading once [`regular_file`] has passed, then checks that what was
/// opened is that same regular file. Opened non-blocking, so a FIFO put in its place
/// in between cannot hang the open; that flag changes nothing for a regular file.
pub fn open_regular(path: &Path) -> Result<(File, Metadata)> {
    let before = regular_file(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options
        .open(path)
        .map_err(|e| unreachable_target(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() || !same_file(&before, &meta) {
        return Err(Error::File {
            path: path.to_path_buf(),
            problem: "was replaced by another file while being opened".into(),
        });
    }
    Ok((file, meta))
}

/// The whole of `path`, a regular file of at most `max_bytes`; `what` names the kind of
/// file in the error (e.g. `config.json`). The size is checked before anything is read,
/// and the read stops past the limit should the file grow meanwhile.
pub fn read_bounded(path: &Path, what: &str, max_bytes: u64) -> Result<Vec<u8>> {
    let (file, meta) = open_regular(path)?;
    let too_large = |len: String| Error::File {
        path: path.to_path_buf(),
        problem: format!(
            "{len} bytes, more than the {max_bytes} bytes ({} MiB) a {what} may have",
            max_bytes >> 20
        ),
    };
    if meta.len() > max_bytes {
        return Err(too_large(meta.len().to_string()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(format!("at least {}", bytes.len())));
    }
    Ok(bytes)
}

/// [`read_bounded`] of a UTF-8 text file.
pub fn read_bounded_string(path: &Path, what: &str, max_bytes: u64) -> Result<String> {
    let bytes = read_bounded(path, what, max_bytes)?;
    String::from_utf8(bytes).map_err(|e| Error::File {
        path: path.to_path_buf(),
        problem: format!(
            "not valid UTF-8 (byte offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// Whether anything is at `path`, for optional inputs: a dangling symlink is
/// something (opening it then says where it points), only a name absent from its
/// directory is nothing.
pub fn present(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The error of a failed `stat` or `open` of `path`: where `path` itself is a symlink
/// that leads nowhere, says so and where it points, since "No such file or directory"
/// for a name that is plainly there sends the reader looking in the wrong place.
fn unreachable_target(path: &Path, e: std::io::Error) -> Error {
    let link = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_symlink())
        .and_then(|_| std::fs::read_link(path).ok());
    let Some(target) = link else {
        return Error::io(path, e);
    };
    #[cfg(unix)]
    let looped = e.raw_os_error() == Some(libc::ELOOP);
    #[cfg(not(unix))]
    let looped = false;
    let problem = if looped {
        format!(
            "is a symlink loop (it points to {}, which leads back round)",
            target.display()
        )
    } else if e.kind() == std::io::ErrorKind::NotFound {
        format!("is a symlink to {}, which does not exist", target.display())
    } else {
        format!(
            "is a symlink to {}, which cannot be opened: {e}",
            target.display()
        )
    };
    Error::File {
        path: path.to_path_buf(),
        problem,
    }
}

/// `is a ` or, for a symlink, `is a symlink to TARGET, a `: the start of a sentence
/// naming what `path` finally is.
fn through_link(path: &Path) -> String {
    match std::fs::read_link(path) {
        Ok(target) => format!("is a symlink to {}, a ", target.display()),
        Err(_) => "is a ".into(),
    }
}

/// Whether two metadata describe the same file (device and inode where there are).
pub fn same_file(a: &Metadata, b: &Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        a.dev() == b.dev() && a.ino() == b.ino()
    }
    #[cfg(not(unix))]
    {
        a.len() == b.len() && a.modified().ok() == b.modified().ok()
    }
}

/// The kind of file `meta` describes, as messages name it.
pub fn file_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        return "regular file";
    }
    if t.is_dir() {
        return "directory";
    }
    if t.is_symlink() {
        return "symlink";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO (named pipe)";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_char_device() {
            return "character device";
        }
        if t.is_block_device() {
            return "block device";
        }
    }
    "special file"
}

/// `path` with its directory made absolute and free of symlinks, for comparing paths
/// of files that may not exist yet; `None` where the directory cannot be resolved.
pub fn canonical_name(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let name = path.file_name()?;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.canonicalize().ok()?,
        None => std::env::current_dir().ok()?,
    };
    Some(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn only_regular_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let e = regular_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let e = regular_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(regular_file(&f).is_ok());
        assert!(open_regular(&f).is_ok());
    }

    #[test]
    fn fifos_sockets_and_devices_behind_symlinks_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let socket = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let zero = dir.path().join("config.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for (path, needles) in [
            (&fifo, vec!["FIFO"]),
            (&socket, vec!["socket"]),
            (&zero, vec!["symlink to /dev/zero", "character device"]),
        ] {
            let e = read_bounded(path, "config.json", CONFIG_JSON_MAX)
                .unwrap_err()
                .to_string();
            for n in needles {
                assert!(e.contains(n), "`{n}` missing from: {e}");
            }
        }
    }

    #[test]
    fn files_over_their_limit_are_refused_naming_size_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(&f, vec![b' '; 1000]).unwrap();
        let e = read_bounded(&f, "config.json", 999)
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json") && e.contains("1000 bytes"), "{e}");
        assert!(e.contains("999"), "{e}");
        assert_eq!(read_bounded(&f, "config.json", 1000).unwrap().len(), 1000);
        std::fs::write(&f, [0xff]).unwrap();
        let e = read_bounded_string(&f, "x", 10).unwrap_err().to_string();
        assert!(e.contains("UTF-8"), "{e}");
    }

    #[test]
    fn dangling_and_looping_symlinks_are_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let dangling = dir.path().join("tokenizer.json");
        std::os::unix::fs::symlink(dir.path().join("gone.json"), &dangling).unwrap();
        let e = read_bounded(&dangling, "tokenizer.json", 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is a symlink to") && e.contains("gone.json"),
            "{e}"
        );
        assert!(e.contains("does not exist"), "{e}");
        assert!(present(&dangling).unwrap());
        assert!(!present(&dir.path().join("absent")).unwrap());
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = open_regular(&a).unwrap_err().to_string();
        assert!(e.contains("symlink loop"), "{e}");
    }
}
