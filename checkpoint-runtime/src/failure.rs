//! How a failure travels inside the runtime before it becomes a
//! [`RunError`](crate::RunError).

use checkpoint_core::WindowId;

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
    },
}

impl Failure {
    pub(crate) fn operator(operator: &str, window: Option<WindowId>, cause: impl std::fmt::Display) -> Self {
        Failure::Operator {
            operator: operator.to_owned(),
            window,
            cause: cause.to_string(),
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
