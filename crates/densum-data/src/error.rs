//! One error type for the whole crate. Every variant names the file it is about (and, where
//! it helps, the byte offset, archive member or line), because the person reading the message
//! has to find and fix the file.

use std::path::{Path, PathBuf};

/// Errors from opening, decoding, loading and downloading datasets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused a read, write or listing.
    #[error("{path}: {err}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        err: std::io::Error,
    },
    /// The bytes of a file (or archive member) do not have the expected structure.
    #[error("{location}: {msg}")]
    Format {
        /// File, or `archive (member name)`, concerned.
        location: String,
        /// What is wrong and where (offset, record, line).
        msg: String,
    },
    /// An image file could not be decoded.
    #[error("{path}: cannot decode image: {msg}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        msg: String,
    },
    /// The requested split (or a file it needs) is not present.
    #[error("{location}: missing split '{split}': {msg}")]
    MissingSplit {
        /// The dataset root or archive.
        location: String,
        /// The split asked for.
        split: String,
        /// What was looked for.
        msg: String,
    },
    /// A download failed (network error, unexpected HTTP status).
    #[error("download {url}: {msg}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        msg: String,
    },
    /// A downloaded or local file does not have the expected checksum.
    #[error("{path}: checksum mismatch: expected md5 {expected}, got {actual}")]
    Checksum {
        /// The file whose checksum is wrong.
        path: PathBuf,
        /// The published md5.
        expected: String,
        /// The md5 of the bytes on disk.
        actual: String,
    },
    /// A caller-side mistake: bad configuration, index out of range, mismatched sizes.
    #[error("{0}")]
    Invalid(String),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }

    /// A format error about `location`.
    pub fn format(location: impl std::fmt::Display, msg: impl Into<String>) -> Self {
        Error::Format {
            location: location.to_string(),
            msg: msg.into(),
        }
    }
}
