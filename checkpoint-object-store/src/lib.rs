//! [`ObjectStoreAgent`]: checkpoints in an object store (S3 and compatible
//! servers, or an in-memory store for tests), on Apache Arrow's
//! `object_store` crate, behind the same [`StorageAgent`] contract as the
//! filesystem agent.
//!
//! The layout under the prefix mirrors `FsStorageAgent`'s
//! (`docs/FORMAT.md`, "Storage"): `<prefix>/<operator>/<16 hex digits of
//! the window>` for a snapshot, `<prefix>/<operator>/chunks/<chunk id>` for
//! a chunk of keyed state, `<prefix>/.manifest` for the job manifest. An
//! object store's put is atomic (a reader sees the whole object or the old
//! one) and durable once acknowledged, so a save is one put; nothing is
//! renamed.
//!
//! One job at a time per prefix ([`StorageAgent::lock`]): a job holds a
//! lease, `<prefix>/.lease`, that it renews every third of
//! [`ObjectStoreAgent::with_lease`]'s period; a second job finds it held
//! and renewed and stops, having touched nothing; a job whose holder died
//! takes it over after one period without renewal. Every manifest write
//! of a job is conditional on the version its previous write produced
//! (`If-Match` on the ETag; `If-None-Match: *` for the first one of a new
//! job), so a job another one superseded cannot write over it.
//!
//! The S3 client's own retries are off: the runtime retries checkpoint
//! saves itself (`Config::save_retries`, counted in its run report), and
//! the agent retries its other calls (reads, lists, deletes, conditional
//! manifest writes) up to three times. Every call gives up at the calling
//! thread's [`Deadline`] (the runtime sets the checkpoint's save timeout).
//! Objects of 16 MiB or more go up in parts
//! ([`ObjectStoreAgent::with_multipart`]).
//!
//! [`ExactlyOnceObjectSink`] publishes a job's output into an object store,
//! one object per committed window, never twice.
//!
//! # Examples
//!
//! ```
//! use checkpoint_core::{Snapshot, SnapshotMeta, StorageAgent, WindowId};
//! use checkpoint_object_store::ObjectStoreAgent;
//!
//! let agent = ObjectStoreAgent::from_url("memory://jobs/wordcount")?;
//! let window = WindowId::new(1_700_000_000, 9);
//! agent.save("count", window, &Snapshot::encode(&42u64, SnapshotMeta::new("count", window))?)?;
//! assert_eq!(agent.windows("count")?, [window]);
//! assert_eq!(Snapshot::decode::<u64>(&agent.load("count", window)?)?.1, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use checkpoint_core::{
    ChunkId, Deadline, ManifestVersion, StorageAgent, StorageError, StorageLock, WindowId, check_chunk_placement,
    check_placement, validate_operator_name,
};
use futures::future::try_join_all;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};

mod error;
mod lease;
pub mod location;
mod sink;
mod upload;

use error::{DeadlinePassed, LeaseLapsed, io_error, may_pass, store_error};
use upload::{MIN_PART, Multipart, put_object};

pub use sink::{ExactlyOnceObjectSink, ObjectOutput};

/// The manifest's object name under the prefix (operator names cannot
/// start with a dot, so nothing collides with it).
const MANIFEST: &str = ".manifest";

/// The lease's object name under the prefix.
const LEASE: &str = ".lease";

/// The lease period unless [`ObjectStoreAgent::with_lease`] sets one.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Retries of a call other than a save (see `ObjectStoreAgent::block_retrying`).
const CALL_RETRIES: u32 = 3;

/// The subdirectory of an operator's that holds its chunks.
const CHUNK_DIR: &str = "chunks";

/// A storage agent over an [`ObjectStore`]: checkpoints that outlive the
/// machine (S3, MinIO, any S3-compatible server), or an in-memory store.
///
/// Calls block the calling thread on the agent's own small async runtime
/// (two threads), so the agent is used like the filesystem one, from the
/// runtime's saver and supervisor threads. Do not call it from inside an
/// async runtime.
pub struct ObjectStoreAgent {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    description: String,
    runtime: Arc<tokio::runtime::Runtime>,
    lease: Duration,
    multipart: Multipart,
    /// The lease this agent took ([`StorageAgent::lock`]), while it is held:
    /// every write and delete, and every retry of one, checks it first.
    held: std::sync::Mutex<std::sync::Weak<lease::Shared>>,
}

impl fmt::Debug for ObjectStoreAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreAgent")
            .field("store", &self.description)
            .field("prefix", &self.prefix.as_ref())
            .finish()
    }
}

impl ObjectStoreAgent {
    /// An agent on `store`, keeping everything under `prefix` (`""` for
    /// the store's root).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let store = Arc::new(object_store::memory::InMemory::new());
    /// let agent = checkpoint_object_store::ObjectStoreAgent::new(store, "jobs/one")?;
    /// # use checkpoint_core::StorageAgent;
    /// assert!(agent.operators()?.is_empty());
    /// # Ok::<(), checkpoint_core::StorageError>(())
    /// ```
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self, StorageError> {
        let description = store.to_string();
        Self::with_description(store, prefix, description)
    }

    fn with_description(store: Arc<dyn ObjectStore>, prefix: &str, description: String) -> Result<Self, StorageError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| io_error("starting the object store's runtime", prefix, e))?;
        let prefix = Path::from_iter(prefix.split('/').filter(|p| !p.is_empty()).map(PathPart::from));
        Ok(ObjectStoreAgent {
            store,
            prefix,
            description,
            runtime: Arc::new(runtime),
            lease: DEFAULT_LEASE,
            multipart: Multipart::default(),
            held: std::sync::Mutex::new(std::sync::Weak::new()),
        })
    }

    /// The same agent uploading objects of at least `threshold` bytes in
    /// parts of `part_size` bytes (at least 5 MiB, S3's smallest part), up
    /// to 4 at once; default: 16 MiB in 8 MiB parts. A multipart upload
    /// that fails is aborted (its parts removed); one cut short by the
    /// save timeout or a crash is left for the bucket's lifecycle rule for
    /// incomplete uploads to remove, and is never visible as an object.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_object_store::ObjectStoreAgent;
    ///
    /// let agent = ObjectStoreAgent::from_url("memory://jobs/big")?.with_multipart(32 << 20, 16 << 20);
    /// # let _ = agent;
    /// # Ok::<(), checkpoint_core::StorageError>(())
    /// ```
    #[must_use]
    pub fn with_multipart(mut self, threshold: usize, part_size: usize) -> Self {
        let part_size = part_size.max(MIN_PART);
        self.multipart = Multipart {
            threshold: threshold.max(part_size),
            part_size,
        };
        self
    }

    /// The same agent with lease period `lease` (default [`DEFAULT_LEASE`],
    /// 10 s; at least 30 ms): how long a job that starts waits for a sign
    /// of life from a job that holds the prefix before it takes the prefix
    /// over. A job renews its lease every third of the period and, when its
    /// renewals have failed for half of it, writes and deletes nothing
    /// until one succeeds ([`StorageError::LeaseUncertain`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use checkpoint_core::{StorageAgent, StorageError};
    /// use checkpoint_object_store::ObjectStoreAgent;
    ///
    /// let store = std::sync::Arc::new(object_store::memory::InMemory::new());
    /// let first = ObjectStoreAgent::new(store.clone(), "job")?.with_lease(Duration::from_millis(300));
    /// let second = ObjectStoreAgent::new(store, "job")?.with_lease(Duration::from_millis(300));
    /// let held = first.lock()?;
    /// // The first job renews its lease: the second gives up within a period.
    /// assert!(matches!(second.lock(), Err(StorageError::Locked { .. })));
    /// drop(held);
    /// // Released: the second job takes the prefix at once.
    /// let _held = second.lock()?;
    /// # Ok::<(), StorageError>(())
    /// ```
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// An agent for a URL: `s3://bucket/prefix` (configured from the usual
    /// environment: `AWS_ENDPOINT_URL` or `AWS_ENDPOINT` for an S3-compatible
    /// server, `AWS_ALLOW_HTTP=true` for one on plain HTTP such as a
    /// loopback test server, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`), or `memory://prefix` for a fresh in-memory
    /// store.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        Self::from_url_with(url, std::iter::empty::<(&str, &str)>())
    }

    /// [`from_url`](ObjectStoreAgent::from_url) with S3 settings given
    /// here rather than in the environment (they override it): keys as
    /// `object_store`'s `AmazonS3ConfigKey` parses them, such as
    /// `aws_endpoint`, `aws_allow_http`, `aws_region`,
    /// `aws_access_key_id`, `aws_secret_access_key`.
    ///
    /// # Examples
    ///
    /// ```
    /// let agent = checkpoint_object_store::ObjectStoreAgent::from_url_with(
    ///     "s3://checkpoints/jobs/wordcount",
    ///     [("aws_endpoint", "http://127.0.0.1:9000"), ("aws_allow_http", "true"), ("aws_region", "us-east-1")],
    /// )?;
    /// # let _ = agent;
    /// # Ok::<(), checkpoint_core::StorageError>(())
    /// ```
    pub fn from_url_with<'a>(
        url: &str,
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, StorageError> {
        let bad = |why: &str| io_error("reading the storage URL", url, std::io::Error::other(why.to_owned()));
        if let Some(rest) = url.strip_prefix("memory://") {
            let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
            return Self::with_description(store, rest, url.to_owned());
        }
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(bad("expected s3://bucket/prefix or memory://prefix"));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the URL names no bucket"));
        }
        // No retries hidden in the client: the runtime retries checkpoint
        // saves itself (counted in the run report) and this agent its
        // other calls (`retrying`), both within a checkpoint's deadline.
        let no_retries = object_store::RetryConfig {
            max_retries: 0,
            ..object_store::RetryConfig::default()
        };
        let mut builder = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
            .with_retry(no_retries);
        for (key, value) in options {
            let key: object_store::aws::AmazonS3ConfigKey =
                key.parse().map_err(|_| bad(&format!("unknown S3 setting {key:?}")))?;
            builder = builder.with_config(key, value);
        }
        let store = builder
            .build()
            .map_err(|e| io_error("configuring the S3 client", url, std::io::Error::other(e)))?;
        Self::with_description(Arc::new(store), prefix, url.to_owned())
    }

    /// [`block`](ObjectStoreAgent::block) for a call that may be repeated
    /// (a read, a delete, a conditional manifest write, which recognizes its
    /// own earlier attempt): made again, up to [`CALL_RETRIES`] times with a
    /// growing wait, while it fails for a reason that may pass and the
    /// calling thread's [`Deadline`], if any, leaves time. Saves of
    /// snapshots and chunks are not: the runtime retries and counts those.
    pub(crate) fn block_retrying<T, F, Fut>(&self, what: &'static str, make: F) -> Result<T, object_store::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        let mut wait = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match self.block(make()) {
                Err(e)
                    if may_pass(&e)
                        && tries < CALL_RETRIES
                        && Deadline::current().is_none_or(|d| std::time::Instant::now() + wait < d)
                        && self.fence().is_ok() =>
                {
                    tries += 1;
                    tracing::warn!(storage = %self.what(), call = what, retry = tries, error = %e, "object store call failed; retrying");
                    std::thread::sleep(wait);
                    wait *= 2;
                }
                result => return result,
            }
        }
    }

    /// [`block`](ObjectStoreAgent::block) for a write of a snapshot or
    /// chunks, which a lease this agent holds also bounds: once the lease
    /// cannot be vouched for (not renewed for half a period, or taken over)
    /// the request is dropped, so a write begun under the lease cannot land
    /// after another job may have taken the prefix over. Renewals keep a
    /// long upload going.
    fn block_fenced<T, E: From<DeadlinePassed> + From<LeaseLapsed>>(
        &self,
        future: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .upgrade();
        let Some(shared) = held else {
            return self.block(future);
        };
        let lapsed = async move {
            while let Some(until) = shared.valid_until() {
                if std::time::Instant::now() >= until {
                    break;
                }
                tokio::time::sleep_until(until.into()).await;
            }
        };
        self.block(async move {
            match futures::future::select(Box::pin(future), Box::pin(lapsed)).await {
                futures::future::Either::Left((result, _)) => result,
                futures::future::Either::Right(_) => Err(LeaseLapsed.into()),
            }
        })
    }

    /// `Ok` unless this agent holds a lease it cannot vouch for (lost, or
    /// not renewed for half a period): then it writes and deletes nothing,
    /// not even a retry of a call made while the lease was good.
    fn fence(&self) -> Result<(), StorageError> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .upgrade();
        held.map_or(Ok(()), |shared| shared.check())
    }

    /// The storage as messages name it.
    pub(crate) fn what(&self) -> String {
        if self.description.contains("://") {
            self.description.clone()
        } else {
            format!("{} prefix {:?}", self.description, self.prefix.as_ref())
        }
    }

    /// Runs `future` on the agent's runtime, giving up at the calling
    /// thread's [`Deadline`] if one is set (the request is dropped, which
    /// cancels it).
    fn block<T, E: From<DeadlinePassed>>(&self, future: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        match Deadline::current() {
            None => self.runtime.block_on(future),
            Some(deadline) => self.runtime.block_on(async {
                tokio::time::timeout_at(deadline.into(), future)
                    .await
                    .unwrap_or_else(|_| Err(DeadlinePassed.into()))
            }),
        }
    }

    fn operator_path(&self, operator: &str) -> Result<Path, StorageError> {
        validate_operator_name(operator)?;
        Ok(self.prefix.child(operator))
    }

    fn snapshot_path(&self, operator: &str, window: WindowId) -> Result<Path, StorageError> {
        Ok(self.operator_path(operator)?.child(window_name(window)))
    }

    fn chunk_path(&self, operator: &str, id: ChunkId) -> Result<Path, StorageError> {
        Ok(self.operator_path(operator)?.child(CHUNK_DIR).child(id.to_string()))
    }

    /// The windows named by the objects directly under `dir` (16 lower-case
    /// hex digits), ascending.
    pub(crate) fn windows_under(&self, dir: &Path) -> Result<Vec<WindowId>, StorageError> {
        let mut windows: Vec<WindowId> = self.names_under(dir)?.iter().filter_map(|n| parse_window(n)).collect();
        windows.sort_unstable();
        Ok(windows)
    }

    /// The names of the objects directly under `dir`, decoded.
    pub(crate) fn names_under(&self, dir: &Path) -> Result<Vec<String>, StorageError> {
        let listed = self
            .block_retrying("list", || self.store.list_with_delimiter(Some(dir)))
            .map_err(|e| store_error("listing", dir, e))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(decode_part))
            .collect())
    }
}

impl StorageAgent for ObjectStoreAgent {
    fn save(&self, operator: &str, window: WindowId, snapshot: &[u8]) -> Result<(), StorageError> {
        let path = self.snapshot_path(operator, window)?;
        check_placement(operator, window, snapshot)?;
        self.fence()?;
        let put = put_object(Arc::clone(&self.store), path.clone(), snapshot.to_vec(), self.multipart);
        self.block_fenced(put).map_err(|e| store_error("writing", &path, e))
    }

    fn load(&self, operator: &str, window: WindowId) -> Result<Vec<u8>, StorageError> {
        let path = self.snapshot_path(operator, window)?;
        let bytes = self
            .block_retrying("read", || async { self.store.get(&path).await?.bytes().await })
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => StorageError::NotFound {
                    operator: operator.to_owned(),
                    window,
                },
                e => store_error("reading", &path, e),
            })?
            .to_vec();
        check_placement(operator, window, &bytes)?;
        Ok(bytes)
    }

    fn delete(&self, operator: &str, window: WindowId) -> Result<(), StorageError> {
        let path = self.snapshot_path(operator, window)?;
        delete_if_exists(self, &path)
    }

    fn windows(&self, operator: &str) -> Result<Vec<WindowId>, StorageError> {
        self.windows_under(&self.operator_path(operator)?)
    }

    fn operators(&self) -> Result<Vec<String>, StorageError> {
        let listed = self
            .block_retrying("list", || self.store.list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| store_error("listing", &self.prefix, e))?;
        let mut operators: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(decode_part))
            .filter(|name| validate_operator_name(name).is_ok())
            .collect();
        operators.sort();
        Ok(operators)
    }

    /// Takes the prefix's lease (see [`with_lease`](ObjectStoreAgent::with_lease)).
    fn lock(&self) -> Result<StorageLock, StorageError> {
        let (lock, held) = lease::acquire(lease::LeaseTarget {
            store: Arc::clone(&self.store),
            runtime: Arc::clone(&self.runtime),
            path: self.prefix.child(LEASE),
            what: self.what(),
            lease: self.lease,
        })?;
        *self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = held;
        Ok(lock)
    }

    fn load_manifest_versioned(&self) -> Result<Option<(Vec<u8>, ManifestVersion)>, StorageError> {
        let path = self.prefix.child(MANIFEST);
        let got = self.block_retrying("read", || async {
            let got = self.store.get(&path).await?;
            let e_tag = got.meta.e_tag.clone();
            Ok::<_, object_store::Error>((got.bytes().await?.to_vec(), e_tag))
        });
        match got {
            Ok((bytes, Some(e_tag))) => Ok(Some((bytes, ManifestVersion::new(e_tag)))),
            Ok((_, None)) => Err(io_error(
                "reading",
                path.as_ref(),
                std::io::Error::other("the object store gave the manifest no ETag: it cannot fence a job"),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error("reading", &path, e)),
        }
    }

    /// A conditional put: `If-None-Match: *` when `expected` is `None`,
    /// `If-Match: <ETag>` otherwise.
    fn replace_manifest(
        &self,
        manifest: &[u8],
        expected: Option<&ManifestVersion>,
    ) -> Result<ManifestVersion, StorageError> {
        let path = self.prefix.child(MANIFEST);
        self.fence()?;
        let mode = match expected {
            None => PutMode::Create,
            Some(version) => PutMode::Update(UpdateVersion {
                e_tag: Some(version.as_str().to_owned()),
                version: None,
            }),
        };
        let put = || {
            self.store.put_opts(
                &path,
                PutPayload::from(manifest.to_vec()),
                PutOptions::from(mode.clone()),
            )
        };
        match self.block_retrying("conditional write", put) {
            Ok(result) => result.e_tag.map(ManifestVersion::new).ok_or_else(|| {
                io_error(
                    "writing",
                    path.as_ref(),
                    std::io::Error::other("the object store gave the manifest no ETag: it cannot fence a job"),
                )
            }),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                // A retried put finds its own first attempt: that is success.
                match self.load_manifest_versioned()? {
                    Some((found, version)) if found == manifest => Ok(version),
                    _ => Err(StorageError::Superseded {
                        what: self.what(),
                        detail: "another job wrote its job manifest since this job last did".to_owned(),
                    }),
                }
            }
            Err(e) => Err(store_error("writing", &path, e)),
        }
    }

    fn save_manifest(&self, manifest: &[u8]) -> Result<(), StorageError> {
        let path = self.prefix.child(MANIFEST);
        self.fence()?;
        self.block(self.store.put(&path, PutPayload::from(manifest.to_vec())))
            .map(|_| ())
            .map_err(|e| store_error("writing", &path, e))
    }

    fn load_manifest(&self) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.prefix.child(MANIFEST);
        match self.block_retrying("read", || async { self.store.get(&path).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error("reading", &path, e)),
        }
    }

    fn supports_chunks(&self) -> bool {
        true
    }

    /// Puts every chunk of the batch at once; each is durable when its put
    /// is acknowledged, and the call returns once all of them are.
    fn save_chunks(&self, operator: &str, chunks: &[(ChunkId, Vec<u8>)]) -> Result<(), StorageError> {
        self.fence()?;
        let mut puts = Vec::with_capacity(chunks.len());
        for (id, bytes) in chunks {
            check_chunk_placement(operator, *id, bytes)?;
            let path = self.chunk_path(operator, *id)?;
            let put = put_object(Arc::clone(&self.store), path.clone(), bytes.clone(), self.multipart);
            puts.push(async move { put.await.map_err(|e| store_error("writing", &path, e)) });
        }
        self.block_fenced(try_join_all(puts)).map(|_| ())
    }

    fn load_chunk(&self, operator: &str, id: ChunkId) -> Result<Vec<u8>, StorageError> {
        let path = self.chunk_path(operator, id)?;
        self.block_retrying("read", || async { self.store.get(&path).await?.bytes().await })
            .map(|bytes| bytes.to_vec())
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => StorageError::ChunkNotFound {
                    operator: operator.to_owned(),
                    chunk: id.to_string(),
                },
                e => store_error("reading", &path, e),
            })
    }

    fn delete_chunk(&self, operator: &str, id: ChunkId) -> Result<(), StorageError> {
        let path = self.chunk_path(operator, id)?;
        delete_if_exists(self, &path)
    }

    fn chunks(&self, operator: &str) -> Result<Vec<ChunkId>, StorageError> {
        let dir = self.operator_path(operator)?.child(CHUNK_DIR);
        let mut chunks: Vec<ChunkId> = self.names_under(&dir)?.iter().filter_map(|n| n.parse().ok()).collect();
        chunks.sort_unstable();
        Ok(chunks)
    }
}

fn delete_if_exists(agent: &ObjectStoreAgent, path: &Path) -> Result<(), StorageError> {
    agent.fence()?;
    match agent.block_retrying("delete", || agent.store.delete(path)) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_error("deleting", path, e)),
    }
}

/// A window's object name: its id's 16 lower-case hex digits.
pub(crate) fn window_name(window: WindowId) -> String {
    format!("{:016x}", window.as_u64())
}

/// The window an object name names, if it is one.
fn parse_window(name: &str) -> Option<WindowId> {
    let hex = name.len() == 16 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex.then(|| u64::from_str_radix(name, 16).ok().map(WindowId::from_u64))
        .flatten()
}

/// A path segment as it was given: `PathPart` percent-encodes characters
/// an object key should not hold (`#` among them).
fn decode_part(part: &str) -> String {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(high)), Some(Some(low))) =
                (bytes.get(i + 1).map(|b| hex(*b)), bytes.get(i + 2).map(|b| hex(*b)))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
