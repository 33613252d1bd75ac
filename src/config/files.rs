//! Reading the files a config names (`ca_file`, `file:` secrets) and the config file itself:
//! once per load, only regular files, never more than a fixed cap.
//!
//! A path in a config is user input like any other. Without these checks a FIFO would block the
//! loader forever, `/dev/zero` or `/dev/urandom` would be read until memory runs out, and a
//! directory would give an obscure error. So the file is opened non-blocking (opening a FIFO
//! cannot wait for a writer), its type is taken from the open handle (no race with a rename),
//! and at most `cap + 1` bytes are read, so "too large" is known without reading the rest.
//!
//! The loader is synchronous; callers on an async runtime go through `config::load`, which runs
//! it on tokio's blocking pool.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest file a config may name (`ca_file`, `file:` secrets): 1 MiB. A CA bundle of every
/// public root is about 220 KiB; a secret is a few bytes.
pub const MAX_NAMED_FILE: u64 = 1 << 20;

/// Largest config file: 16 MiB, far above any real one (a few KiB), far below trouble.
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

/// Why a named file was not read. Displays as a phrase that follows the path.
#[derive(Debug)]
pub enum FileError {
    /// Opening or reading failed (missing, permission denied, ...).
    Io(std::io::Error),
    /// It exists but is not a regular file (`what` says what it is).
    NotRegular(&'static str),
    /// It holds more than `cap` bytes.
    TooLarge(u64),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io(e) => write!(f, "cannot read: {e}"),
            FileError::NotRegular(what) => write!(f, "is {what}, not a regular file"),
            FileError::TooLarge(cap) => write!(f, "is larger than the {} limit", size(*cap)),
        }
    }
}

/// `1 MiB`, `16 MiB`, or bytes.
fn size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// Reads `path` whole if it is a regular file of at most `cap` bytes.
pub fn read_bounded(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(FileError::Io)?;
    let meta = file.metadata().map_err(FileError::Io)?;
    let t = meta.file_type();
    if !t.is_file() {
        return Err(FileError::NotRegular(if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "a special file"
        }));
    }
    if meta.len() > cap {
        return Err(FileError::TooLarge(cap));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut out).map_err(FileError::Io)?;
    if out.len() as u64 > cap {
        // Grew between the stat and the read.
        return Err(FileError::TooLarge(cap));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_small_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"hello");
        assert!(matches!(read_bounded(&p, 4), Err(FileError::TooLarge(4))));
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (p, what) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (dir.path(), "a directory"),
        ] {
            match read_bounded(p, MAX_NAMED_FILE) {
                Err(e @ FileError::NotRegular(_)) => assert!(e.to_string().contains(what), "{e}"),
                other => panic!("{}: {other:?}", p.display()),
            }
        }
        assert!(matches!(read_bounded(&dir.path().join("none"), 1), Err(FileError::Io(_))));
    }
}
