//! The one error type of the test kit. Owns error classification only; no I/O.

use std::time::Duration;

/// Everything a test-kit call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket, file or process call failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing (or not the awaited thing) arrived in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// How long we waited.
        after: Duration,
        /// What we were waiting for.
        what: String,
    },
    /// Bytes that were expected to be a DNS message could not be parsed.
    #[error("cannot parse DNS message ({len} bytes): {reason}")]
    Decode {
        /// Length of the offending bytes.
        len: usize,
        /// Parser message.
        reason: String,
    },
    /// A query or reply could not be encoded (bad name, too many records...).
    #[error("cannot encode DNS message: {0}")]
    Encode(String),
    /// A record in presentation form (`"name ttl class type rdata"`) was malformed.
    #[error("bad record text {text:?}: {reason}")]
    RecordText {
        /// The offending text.
        text: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The peer closed the TCP connection.
    #[error("connection closed by peer")]
    Closed,
    /// An HTTP reply was not understood.
    #[error("bad HTTP reply: {0}")]
    Http(String),
    /// A needed program is not installed.
    #[error("{program} not found: install the Debian package `{package}` (apt-get install -y {package})")]
    MissingProgram {
        /// Path we looked at.
        program: String,
        /// Debian package that provides it.
        package: String,
    },
    /// A helper command (ip, knotd, ...) failed.
    #[error("command `{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// A child process exited while we were waiting for it to do something.
    #[error("process exited ({status}) while waiting for {what}; output:\n{output}")]
    Exited {
        /// Exit status as text.
        status: String,
        /// What we were waiting for.
        what: String,
        /// Captured output so far.
        output: String,
    },
}

/// Result alias used throughout the kit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Build a [`Error::Timeout`].
    pub fn timeout(after: Duration, what: impl Into<String>) -> Self {
        Error::Timeout {
            after,
            what: what.into(),
        }
    }

    /// True for [`Error::Timeout`] and for I/O errors that mean "would block / timed out".
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }
}
