//! Directories that survive a power cut.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Creates `path` and every missing parent, like [`fs::create_dir_all`],
/// and makes each directory it creates durable in its parent: the parent is
/// fsync'd after every `mkdir`, before the next step, so a power cut can
/// never keep a directory's contents while losing the directory itself.
///
/// POSIX makes a new directory entry durable only when its parent directory
/// is fsync'd; fsyncing the files inside it is not enough. Every directory
/// the library creates and later relies on (a storage root, an operator's
/// checkpoint directory, an exactly-once sink's output and pending
/// directories) goes through this function.
///
/// When `path` already exists its parent is fsync'd all the same: an
/// earlier process may have created it and died before making it durable.
/// (If that parent cannot be opened for reading, the directory predates
/// this call and is taken as it is.) Existing directories above `path` are
/// taken as they are. A component that exists and is not a directory is an
/// error.
///
/// # Examples
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let root = dir.path().join("jobs").join("wordcount");
/// checkpoint_core::create_dir_all_durable(&root)?;
/// assert!(root.is_dir());
///
/// // Creating it again is fine; a file in the way is not.
/// checkpoint_core::create_dir_all_durable(&root)?;
/// std::fs::write(root.join("file"), "x")?;
/// assert!(checkpoint_core::create_dir_all_durable(root.join("file")).is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn create_dir_all_durable(path: impl AsRef<Path>) -> io::Result<()> {
    let path = path.as_ref();
    // The missing components, deepest first.
    let mut missing: Vec<&Path> = Vec::new();
    let mut current = path;
    loop {
        match fs::metadata(current) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", current.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(current);
                match current.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => current = parent,
                    // A relative path's first component: its parent is the
                    // current directory, which exists.
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    if missing.is_empty() {
        return match sync_dir(&parent_of(path)) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            result => result,
        };
    }
    for dir in missing.into_iter().rev() {
        match fs::create_dir(dir) {
            Ok(()) => {}
            // Created meanwhile by someone else: make it durable all the same.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
        sync_dir(&parent_of(dir))?;
    }
    Ok(())
}

/// The directory holding `path`'s entry (`.` for a relative path's first
/// component, `path` itself for a root).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => PathBuf::from("."),
        Some(parent) => parent.to_path_buf(),
        None => path.to_path_buf(),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_component_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a").join("b").join("c");
        create_dir_all_durable(&deep).expect("create");
        assert!(deep.is_dir());
        create_dir_all_durable(&deep).expect("again");
        create_dir_all_durable(dir.path()).expect("an existing directory");
    }

    #[test]
    fn a_file_in_the_way_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        fs::write(&file, "x").expect("write");
        let err = create_dir_all_durable(&file).expect_err("not a directory");
        assert!(err.to_string().contains("is not a directory"), "{err}");
        assert!(create_dir_all_durable(file.join("sub")).is_err());
    }

    #[test]
    fn relative_paths_resolve_against_the_current_directory() {
        assert_eq!(parent_of(Path::new("a")), Path::new("."));
        assert_eq!(parent_of(Path::new("a/b")), Path::new("a"));
        assert_eq!(parent_of(Path::new("/")), Path::new("/"));
    }
}
