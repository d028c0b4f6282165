//! The engine's error type.

use std::path::PathBuf;

/// Every failure the engine reports. Callers match on the kind; the text is for humans.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `context` says which file and what we were doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The device is full. Writes fail with this until space returns; nothing is poisoned.
    #[error("no space left on device ({context})")]
    NoSpace { context: String },
    /// Stored bytes failed a checksum or a structural check.
    #[error("corruption in {}: offset {offset}: {reason}", file.display())]
    Corruption {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A sync failed or an agent panicked earlier: writes are refused until restart.
    #[error("engine poisoned, writes refused until restart: {0}")]
    Poisoned(String),
    /// Another process (or handle) holds the data directory's LOCK.
    #[error("data directory {} is locked by another process", .0.display())]
    Locked(PathBuf),
    /// The engine is shutting down or closed.
    #[error("engine is closed")]
    Closed,
    /// A configuration value is invalid.
    #[error("invalid config: {0}")]
    Config(String),
    /// A caller asked for something the engine cannot do (e.g. a value over the size limit).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The same error for another waiter (one failed group answers many writers): the kinds
    /// callers act on are kept; others keep their text, as `Poisoned` (a failed group has
    /// poisoned the engine).
    pub fn copy(&self) -> Error {
        match self {
            Error::NoSpace { context } => Error::NoSpace {
                context: context.clone(),
            },
            Error::Poisoned(s) => Error::Poisoned(s.clone()),
            Error::Closed => Error::Closed,
            other => Error::Poisoned(other.to_string()),
        }
    }

    /// Wraps an I/O error, turning ENOSPC into [`Error::NoSpace`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace { context }
        } else {
            Error::Io { context, source }
        }
    }

    pub fn corruption(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for a full device (the caller may retry once space returns).
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }
}

/// Attaches a context string to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
