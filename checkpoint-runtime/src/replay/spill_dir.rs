//! A job's directory for spilled windows: made, locked, removed, and
//! swept when a killed job left one behind.

use std::fs;
use std::path::PathBuf;

/// One job's directory for spilled windows, `<base>/job-<pid>-<n>`: locked
/// (`.lock`, an `flock`) while the job runs and removed with everything in
/// it when the job ends. A job killed before it could remove its own is
/// swept by the next job that starts on the same base, which finds the
/// directory's lock free.
#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
    _lock: checkpoint_core::StorageLock,
}

impl SpillDir {
    /// Sweeps what killed jobs left under `base`, then makes this job's
    /// directory.
    pub(crate) fn create(base: &std::path::Path) -> std::io::Result<SpillDir> {
        fs::create_dir_all(base)?;
        Self::sweep(base);
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("job-{}-{n}-{nanos}", std::process::id());
        // Locked under a name the sweep skips, then renamed: a sweep never
        // sees this directory unlocked.
        let staging = base.join(format!(".new-{name}"));
        fs::create_dir(&staging)?;
        let lock = checkpoint_core::lock_directory(&staging, "spill directory").map_err(std::io::Error::other)?;
        let path = base.join(name);
        fs::rename(&staging, &path)?;
        Ok(SpillDir { path, _lock: lock })
    }

    /// Removes every `job-*` directory under `base` whose lock is free (its
    /// job is gone); best effort, a directory in use is left alone.
    fn sweep(base: &std::path::Path) {
        let Ok(entries) = fs::read_dir(base) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            // A `.new-` directory is a job's for the instant between making
            // and renaming it; one still there minutes later is a killed
            // job's (a younger one may be a job starting right now).
            let stale_staging = name.starts_with(".new-job-")
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STAGING_AGE));
            if !(name.starts_with("job-") || stale_staging) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Ok(lock) = checkpoint_core::lock_directory(&path, "spill directory") {
                let _ = fs::remove_dir_all(&path);
                drop(lock);
            }
        }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.path
    }
}

/// How old a `.new-job-*` directory must be for a sweep to take it for a
/// killed job's.
const STAGING_AGE: std::time::Duration = std::time::Duration::from_secs(600);

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
