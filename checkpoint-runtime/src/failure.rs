//! How a failure travels inside the runtime before it becomes a
//! [`RunError`](crate::RunError).

use checkpoint_core::WindowId;

use crate::error::RunError;

/// Why a worker stopped early.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The job is aborting because of a failure elsewhere; nothing to report.
    Aborted,
    /// This operator failed.
    Operator {
        operator: String,
        window: Option<WindowId>,
        cause: String,
        /// The error the operator's hook returned, kept with its type.
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The job cannot go on, and no recovery would help (the window
    /// sequence is exhausted, say): the job stops with this error.
    Fatal(Box<RunError>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Aborted => f.write_str("the job is aborting"),
            Failure::Operator {
                operator,
                window: Some(window),
                cause,
                ..
            } => write!(f, "operator {operator:?} failed at window {window}: {cause}"),
            Failure::Operator {
                operator,
                window: None,
                cause,
                ..
            } => write!(f, "operator {operator:?} failed: {cause}"),
            Failure::Fatal(error) => error.fmt(f),
        }
    }
}

impl Failure {
    /// The window sequence is used up: `operator` cannot begin a window
    /// after `last`.
    pub(crate) fn exhausted(operator: &str, last: WindowId) -> Self {
        Failure::Fatal(Box::new(RunError::WindowSequenceExhausted {
            operator: operator.to_owned(),
            last,
        }))
    }

    pub(crate) fn operator(operator: &str, window: Option<WindowId>, cause: impl std::fmt::Display) -> Self {
        Failure::Operator {
            operator: operator.to_owned(),
            window,
            cause: cause.to_string(),
            source: None,
        }
    }

    /// `operator`'s hook returned `error`: kept with its type, for the run
    /// error's `source`.
    pub(crate) fn returned(
        operator: &str,
        window: Option<WindowId>,
        error: Box<dyn std::error::Error + Send + Sync + 'static>,
    ) -> Self {
        Failure::Operator {
            operator: operator.to_owned(),
            window,
            cause: error.to_string(),
            source: Some(error),
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_display_without_debug_output() {
        let w = WindowId::new(1, 2);
        assert_eq!(
            Failure::operator("count#1", Some(w), "boom").to_string(),
            "operator \"count#1\" failed at window 0x0000000100000002: boom"
        );
        assert_eq!(
            Failure::operator("sink", None, "boom").to_string(),
            "operator \"sink\" failed: boom"
        );
        let exhausted = Failure::exhausted("lines", WindowId::new(1, u32::MAX)).to_string();
        assert!(exhausted.starts_with("operator \"lines\" cannot begin a window after 0x00000001ffffffff"));
        assert!(!exhausted.contains("WindowSequenceExhausted"));
    }
}
