//! Where a job keeps its checkpoints: the `--checkpoints` argument of the
//! example jobs and the positional argument of the `checkpoint` tool.
//!
//! A directory (an `FsStorageAgent` root) or an object store prefix
//! (`s3://bucket/prefix`, an `ObjectStoreAgent`). The argument is one string:
//! anything that starts with `s3://` (or `memory://`) is a URL, anything else
//! a path, so existing command lines keep working.
//!
//! # Examples
//!
//! ```
//! use checkpoint_object_store::location::CheckpointLocation;
//!
//! let dir: CheckpointLocation = "checkpoints".parse()?;
//! assert_eq!(dir.directory(), Some(std::path::Path::new("checkpoints")));
//! let url: CheckpointLocation = "s3://my-bucket/jobs/rides".parse()?;
//! assert_eq!(url.directory(), None);
//! assert_eq!(url.to_string(), "s3://my-bucket/jobs/rides");
//! assert!("s3:///rides".parse::<CheckpointLocation>().is_err(), "no bucket");
//! # Ok::<(), String>(())
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::ObjectStoreAgent;
use checkpoint_core::{FsStorageAgent, StorageAgent};

/// What the help of a `--checkpoints` option says about its two forms, for
/// the `long_help` of the option.
pub const LOCATION_HELP: &str = "A directory, or an S3 prefix as s3://BUCKET/PREFIX (the bucket must exist). \
    For S3 the endpoint and credentials come from the environment: AWS_ENDPOINT_URL (an S3-compatible \
    server such as MinIO; unset for AWS), AWS_ALLOW_HTTP=true (for an endpoint on plain http://), \
    AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.";

/// The environment variables an `s3://` location is configured from, for
/// error messages.
pub const S3_ENVIRONMENT: &str =
    "AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";

/// A checkpoint directory or an object store URL.
///
/// # Examples
///
/// ```
/// use checkpoint_core::StorageAgent;
/// use checkpoint_object_store::location::CheckpointLocation;
///
/// let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
/// let location = CheckpointLocation::Directory(dir.path().join("checkpoints"));
/// let storage = location.open()?;
/// assert!(storage.load_manifest().map_err(|e| e.to_string())?.is_none(), "a new job");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointLocation {
    /// A directory on this machine, created if missing.
    Directory(PathBuf),
    /// An object store prefix: `s3://bucket/prefix`, or `memory://prefix`
    /// (a store inside this process, gone when it exits: for tests).
    Url(String),
}

impl CheckpointLocation {
    /// Reads a command-line argument: a URL if it starts with `s3://` or
    /// `memory://`, else a directory (which need not be UTF-8).
    ///
    /// # Errors
    ///
    /// An empty argument, an `s3://` URL without a valid bucket name, or a
    /// URL of another scheme (`gs://`, `S3://`, `file://`): a directory path
    /// never looks like one, so it is a mistake, not a directory.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::ffi::OsStr;
    /// use checkpoint_object_store::location::CheckpointLocation;
    ///
    /// assert!(matches!(CheckpointLocation::from_arg(OsStr::new("./ckpt"))?, CheckpointLocation::Directory(_)));
    /// let err = CheckpointLocation::from_arg(OsStr::new("gs://bucket/x")).unwrap_err();
    /// assert!(err.contains("s3://"), "{err}");
    /// # Ok::<(), String>(())
    /// ```
    pub fn from_arg(arg: &OsStr) -> Result<Self, String> {
        match arg.to_str() {
            Some(text) => text.parse(),
            // Not UTF-8, so not a URL.
            None => Ok(CheckpointLocation::Directory(PathBuf::from(arg))),
        }
    }

    /// The directory, if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_object_store::location::CheckpointLocation;
    ///
    /// let url = CheckpointLocation::Url("s3://bucket/rides".to_owned());
    /// assert!(url.directory().is_none());
    /// ```
    pub fn directory(&self) -> Option<&Path> {
        match self {
            CheckpointLocation::Directory(dir) => Some(dir),
            CheckpointLocation::Url(_) => None,
        }
    }

    /// A storage agent on this location, ready for a job: a directory is
    /// created if missing and cleared of temp files an interrupted save left;
    /// a URL is only parsed here (the first request reaches the server).
    ///
    /// # Errors
    ///
    /// A directory that cannot be created or read, or a URL the object
    /// store client refuses; the message says what to do.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_object_store::location::CheckpointLocation;
    ///
    /// let storage = "memory://jobs/rides".parse::<CheckpointLocation>()?.open()?;
    /// assert!(storage.operators().map_err(|e| e.to_string())?.is_empty());
    /// # Ok::<(), String>(())
    /// ```
    pub fn open(&self) -> Result<Arc<dyn StorageAgent>, String> {
        match self {
            CheckpointLocation::Directory(dir) => {
                let storage = FsStorageAgent::new(dir)
                    .map_err(|e| format!("cannot use {} as the checkpoint directory: {e}", dir.display()))?;
                storage
                    .remove_stale_temp_files()
                    .map_err(|e| format!("cleaning up {}: {e}", dir.display()))?;
                Ok(Arc::new(storage))
            }
            CheckpointLocation::Url(url) => {
                let storage = ObjectStoreAgent::from_url(url).map_err(|e| {
                    format!("cannot use {url} for checkpoints: {e}\n  (S3 is configured from {S3_ENVIRONMENT})")
                })?;
                Ok(Arc::new(storage))
            }
        }
    }

    /// What to add to a storage error's message: for a URL, where its
    /// settings come from (a wrong endpoint or missing credentials show up
    /// as a failed request); nothing for a directory.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_object_store::location::CheckpointLocation;
    ///
    /// let url = CheckpointLocation::Url("s3://bucket/rides".to_owned());
    /// assert!(url.hint().contains("AWS_ENDPOINT_URL"));
    /// assert_eq!(CheckpointLocation::Directory("ckpt".into()).hint(), "");
    /// ```
    pub fn hint(&self) -> String {
        match self {
            CheckpointLocation::Directory(_) => String::new(),
            CheckpointLocation::Url(_) => format!("\n  (S3 is configured from {S3_ENVIRONMENT}: check them)"),
        }
    }
}

impl FromStr for CheckpointLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty: give a directory or s3://BUCKET/PREFIX".to_owned());
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let bucket = rest.split('/').next().unwrap_or_default();
            if bucket.is_empty() {
                return Err(format!(
                    "{text:?} names no bucket: expected s3://BUCKET/PREFIX, such as s3://checkpoints/jobs/rides"
                ));
            }
            // S3's rule for bucket names, less the length limits, so a
            // typo is caught here rather than as a failed request.
            if !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
            {
                return Err(format!(
                    "{bucket:?} in {text:?} is not a bucket name: lower-case letters, digits, '.' and '-' only"
                ));
            }
            return Ok(CheckpointLocation::Url(text.to_owned()));
        }
        if text.starts_with("memory://") {
            return Ok(CheckpointLocation::Url(text.to_owned()));
        }
        if let Some((scheme, _)) = text.split_once("://")
            && !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(format!(
                "{text:?}: {scheme}:// is not supported: give a directory or s3://BUCKET/PREFIX (lower-case s3)"
            ));
        }
        Ok(CheckpointLocation::Directory(PathBuf::from(text)))
    }
}

impl fmt::Display for CheckpointLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointLocation::Directory(dir) => write!(f, "{}", dir.display()),
            CheckpointLocation::Url(url) => f.write_str(url),
        }
    }
}

/// With the `clap` feature.
#[cfg(feature = "clap")]
impl clap::builder::ValueParserFactory for CheckpointLocation {
    type Parser = clap::builder::TryMapValueParser<
        clap::builder::OsStringValueParser,
        fn(std::ffi::OsString) -> Result<CheckpointLocation, String>,
    >;

    /// Lets a clap `derive` field be a `CheckpointLocation` with no
    /// `value_parser` attribute; a malformed URL is a usage error.
    fn value_parser() -> Self::Parser {
        use clap::builder::TypedValueParser as _;
        use std::ffi::OsString;
        fn parse(arg: OsString) -> Result<CheckpointLocation, String> {
            CheckpointLocation::from_arg(&arg)
        }
        clap::builder::OsStringValueParser::new().try_map(parse as fn(OsString) -> Result<CheckpointLocation, String>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_directories() {
        let parse = |s: &str| s.parse::<CheckpointLocation>();
        assert_eq!(
            parse("s3://b/p/q"),
            Ok(CheckpointLocation::Url("s3://b/p/q".to_owned()))
        );
        assert_eq!(
            parse("s3://bucket"),
            Ok(CheckpointLocation::Url("s3://bucket".to_owned()))
        );
        assert_eq!(
            parse("memory://x"),
            Ok(CheckpointLocation::Url("memory://x".to_owned()))
        );
        assert_eq!(parse("ckpt"), Ok(CheckpointLocation::Directory("ckpt".into())));
        assert_eq!(parse("./a:b/c"), Ok(CheckpointLocation::Directory("./a:b/c".into())));
        assert_eq!(
            parse("/tmp/s3:/x"),
            Ok(CheckpointLocation::Directory("/tmp/s3:/x".into()))
        );
        for bad in [
            "",
            "s3://",
            "s3:///prefix",
            "s3://My_Bucket/x",
            "S3://bucket/x",
            "gs://b/x",
            "file:///tmp",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
