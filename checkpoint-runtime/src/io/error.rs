//! The error of the file operators.

use std::io;
use std::path::PathBuf;

use checkpoint_core::WindowId;

use super::WindowDataError;

/// Why [`LineInput`](super::LineInput) or
/// [`ExactlyOnceFileSink`](super::ExactlyOnceFileSink) failed. Every variant
/// names the file and, where there is one, the window.
///
/// The operators return it boxed, as their hooks' error; the runtime reports
/// it as the operator's failure.
///
/// # Examples
///
/// ```
/// use checkpoint_runtime::io::FileOperatorError;
///
/// let err = FileOperatorError::NotUtf8 { path: "input.txt".into(), offset: 42 };
/// assert_eq!(err.to_string(), "input.txt: the line at byte 42 is not valid UTF-8");
///
/// // What a hook returns, and how to get the typed error back.
/// let boxed: Box<dyn std::error::Error + Send + Sync> = err.into();
/// assert!(matches!(boxed.downcast_ref(), Some(FileOperatorError::NotUtf8 { offset: 42, .. })));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileOperatorError {
    /// An I/O operation on a file or directory failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done ("opening the input file", "publishing", ...).
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A line of the input is not UTF-8.
    #[error("{}: the line at byte {offset} is not valid UTF-8", .path.display())]
    NotUtf8 {
        /// The input file.
        path: PathBuf,
        /// Where the line starts.
        offset: u64,
    },
    /// A path cannot be saved in a checkpoint (serde writes paths as UTF-8).
    #[error("{}: the path is not valid UTF-8, so it cannot be saved in a checkpoint", .path.display())]
    PathNotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// What was recorded about the input no longer matches the file, or the
    /// records are incomplete: an exact replay is impossible.
    #[error("{}: cannot replay window {window}: {detail}", .path.display())]
    Replay {
        /// The input file.
        path: PathBuf,
        /// The window being replayed.
        window: WindowId,
        /// What does not match.
        detail: String,
    },
    /// A pending window's output, needed to publish it, is missing.
    #[error(
        "{}: the pending output of window {window} is missing, and the window was not published; \
         its output is lost (was the output directory modified, or shared by two sinks?)",
        .path.display()
    )]
    MissingPending {
        /// The pending file.
        path: PathBuf,
        /// The window.
        window: WindowId,
    },
    /// A hook was called before `setup` (or outside a window).
    #[error("{operator}: {what}")]
    Lifecycle {
        /// The operator type.
        operator: &'static str,
        /// What was out of order.
        what: &'static str,
    },
    /// Reading or writing the input's window records failed.
    #[error(transparent)]
    WindowData(#[from] WindowDataError),
}

impl FileOperatorError {
    pub(crate) fn io(action: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FileOperatorError::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }
}
