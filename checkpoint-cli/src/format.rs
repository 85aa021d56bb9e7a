//! Formatting for the output: windows, sizes, counts and snapshot errors.

use checkpoint_core::{SnapshotError, WindowId};

pub(crate) fn window_text(window: WindowId) -> String {
    format!("{window} (#{})", window.sequence())
}

pub(crate) fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1024;
    if bytes < 10 * KIB {
        format!("{bytes} B")
    } else if bytes < 10 * KIB * KIB {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (KIB * KIB) as f64)
    }
}

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(crate) fn describe(e: &SnapshotError) -> String {
    match e {
        SnapshotError::BadMagic { .. } => format!("not a checkpoint ({e})"),
        _ => e.to_string(),
    }
}
