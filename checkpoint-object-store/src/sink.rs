//! An exactly-once sink into an object store: each window's output is
//! published as one object with a create-only write once the window is
//! committed, so no replay can publish a window twice.

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};
use std::marker::PhantomData;
use std::sync::Arc;

use checkpoint_core::{Checkpoint, StorageError, WindowId};
use checkpoint_runtime::{Operator, OperatorContext, OperatorResult, Output, Tuple};
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};

use crate::{ObjectStoreAgent, store_error};

/// Where an [`ExactlyOnceObjectSink`] publishes: a prefix of an object
/// store, one object per window, `<prefix>/<W>` (`<W>` the window id's 16
/// lower-case hex digits).
///
/// # Examples
///
/// ```
/// use checkpoint_object_store::ObjectOutput;
///
/// let output = ObjectOutput::from_url("memory://out/counts")?;
/// assert!(output.published_windows()?.is_empty());
/// assert_eq!(output.read_output()?, b"");
/// # Ok::<(), checkpoint_core::StorageError>(())
/// ```
pub struct ObjectOutput {
    agent: ObjectStoreAgent,
}

impl fmt::Debug for ObjectOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ObjectOutput").field(&self.agent.what()).finish()
    }
}

impl ObjectOutput {
    /// An output at a URL, configured as
    /// [`ObjectStoreAgent::from_url`] is (`s3://bucket/prefix`, with the
    /// `AWS_*` environment; `memory://prefix` for an in-memory store).
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        Ok(ObjectOutput {
            agent: ObjectStoreAgent::from_url(url)?,
        })
    }

    /// [`from_url`](ObjectOutput::from_url) with S3 settings given here, as
    /// [`ObjectStoreAgent::from_url_with`] takes them.
    ///
    /// # Examples
    ///
    /// ```
    /// let output = checkpoint_object_store::ObjectOutput::from_url_with(
    ///     "s3://results/word-counts",
    ///     [("aws_endpoint", "http://127.0.0.1:9000"), ("aws_allow_http", "true"), ("aws_region", "us-east-1")],
    /// )?;
    /// # let _ = output;
    /// # Ok::<(), checkpoint_core::StorageError>(())
    /// ```
    pub fn from_url_with<'a>(
        url: &str,
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, StorageError> {
        Ok(ObjectOutput {
            agent: ObjectStoreAgent::from_url_with(url, options)?,
        })
    }

    /// An output on `store` under `prefix`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// let store = Arc::new(object_store::memory::InMemory::new());
    /// let output = checkpoint_object_store::ObjectOutput::new(store, "out")?;
    /// assert!(output.published_windows()?.is_empty());
    /// # Ok::<(), checkpoint_core::StorageError>(())
    /// ```
    pub fn new(store: Arc<dyn object_store::ObjectStore>, prefix: &str) -> Result<Self, StorageError> {
        Ok(ObjectOutput {
            agent: ObjectStoreAgent::new(store, prefix)?,
        })
    }

    fn window_path(&self, window: WindowId) -> Path {
        self.agent.prefix.child(crate::window_name(window))
    }

    /// The windows published, ascending (see the type's example).
    pub fn published_windows(&self) -> Result<Vec<WindowId>, StorageError> {
        self.agent.windows_under(&self.agent.prefix)
    }

    /// Everything published, the windows concatenated in window order, so
    /// two runs of a job can be compared byte for byte (see
    /// [`ExactlyOnceObjectSink`]'s example).
    pub fn read_output(&self) -> Result<Vec<u8>, StorageError> {
        let mut output = Vec::new();
        for window in self.published_windows()? {
            let path = self.window_path(window);
            let bytes = self
                .agent
                .block_retrying("read", || async { self.agent.store.get(&path).await?.bytes().await })
                .map_err(|e| store_error("reading", &path, e))?;
            output.extend_from_slice(&bytes);
        }
        Ok(output)
    }

    /// Publishes `window` unless it already is: a create-only write, which
    /// a second attempt (a replay, a retry whose first attempt landed)
    /// finds done. Whether this call published it.
    fn publish(&self, window: WindowId, bytes: &str) -> Result<bool, StorageError> {
        let path = self.window_path(window);
        let put = || {
            self.agent.store.put_opts(
                &path,
                PutPayload::from(bytes.as_bytes().to_vec()),
                PutOptions::from(PutMode::Create),
            )
        };
        match self.agent.block_retrying("create-only write", put) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error("publishing", &path, e)),
        }
    }
}

/// A sink whose output in an object store, after any number of failures
/// and restarts, is the failure-free output byte for byte (with an
/// idempotent input upstream and deterministic operators between): the
/// object-store counterpart of `checkpoint_runtime::io::ExactlyOnceFileSink`.
///
/// Each tuple is written as one line (`Display`, then `\n`) into the
/// window's output, held in the sink's state until the window is
/// committed:
///
/// - A window's output is part of every checkpoint taken until it is
///   published, so a window a checkpoint covers survives a crash with it.
/// - `committed(C)`: every window <= C is published as `<prefix>/<W>` with
///   a create-only write (`If-None-Match: *`); one already there (an
///   earlier attempt's) is left as it is. A window is never published
///   twice, and never before it is committed.
/// - A replayed window already published is not held again.
///
/// Without checkpointing each window is published at its `end_window`.
/// The output is the sink's configuration (`#[checkpoint(config)]`): after
/// a restore it is the one handed to the DAG in this run. What it holds
/// between commits (a checkpoint interval's output) is in memory and in
/// each checkpoint: a sink for large outputs wants frequent checkpoints.
/// The same rules as for the file sink make the output byte-identical:
/// one upstream, tuples of a window in a deterministic order.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// use checkpoint_core::{Checkpoint, MemoryStorageAgent};
/// use checkpoint_object_store::{ExactlyOnceObjectSink, ObjectOutput};
/// use checkpoint_runtime::{Config, Dag, Emit, InputOperator, OperatorResult, Output, Runtime, WindowMode};
///
/// #[derive(Checkpoint)]
/// struct Numbers {
///     next: u64,
/// }
///
/// impl InputOperator for Numbers {
///     type Output = u64;
///     fn emit_tuples(&mut self, out: Output<'_, u64>) -> OperatorResult<Emit> {
///         out.emit(self.next);
///         self.next += 1;
///         Ok(if self.next == 5 { Emit::Done } else { Emit::Continue })
///     }
/// }
///
/// let output = Arc::new(ObjectOutput::from_url("memory://out")?);
/// let mut dag = Dag::new();
/// let numbers = dag.input("numbers", Numbers { next: 0 });
/// let sink = dag.operator("sink", ExactlyOnceObjectSink::<u64>::new(Arc::clone(&output)));
/// dag.connect(&numbers, &sink);
/// Runtime::new(Config::default().storage(MemoryStorageAgent::new()).window_mode(WindowMode::Tuples(2))).run(dag)?;
/// assert_eq!(output.read_output()?, b"0\n1\n2\n3\n4\n");
/// assert_eq!(output.published_windows()?.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Checkpoint)]
pub struct ExactlyOnceObjectSink<T> {
    #[checkpoint(config)]
    output: Option<Arc<ObjectOutput>>,
    last_published: Option<WindowId>,
    /// The output of ended windows not yet published.
    pending: BTreeMap<WindowId, String>,
    /// The window being written; `None` inside it: already published.
    #[checkpoint(transient)]
    current: Option<(WindowId, Option<String>)>,
    /// No checkpointing: publish at `end_window`.
    #[checkpoint(transient)]
    direct: bool,
    #[checkpoint(transient)]
    _tuples: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for ExactlyOnceObjectSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExactlyOnceObjectSink")
            .field("output", &self.output)
            .field("last_published", &self.last_published)
            .field("pending", &self.pending.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<T> ExactlyOnceObjectSink<T> {
    /// A sink publishing into `output`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use checkpoint_object_store::{ExactlyOnceObjectSink, ObjectOutput};
    ///
    /// let sink = ExactlyOnceObjectSink::<String>::new(Arc::new(ObjectOutput::from_url("memory://out")?));
    /// assert_eq!(sink.last_published(), None);
    /// # Ok::<(), checkpoint_core::StorageError>(())
    /// ```
    pub fn new(output: Arc<ObjectOutput>) -> Self {
        ExactlyOnceObjectSink {
            output: Some(output),
            last_published: None,
            pending: BTreeMap::new(),
            current: None,
            direct: false,
            _tuples: PhantomData,
        }
    }

    /// The newest window this sink published (part of its state).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use checkpoint_object_store::{ExactlyOnceObjectSink, ObjectOutput};
    ///
    /// let sink = ExactlyOnceObjectSink::<u64>::new(Arc::new(ObjectOutput::from_url("memory://out")?));
    /// assert_eq!(sink.last_published(), None);
    /// # Ok::<(), checkpoint_core::StorageError>(())
    /// ```
    pub fn last_published(&self) -> Option<WindowId> {
        self.last_published
    }

    fn output(&self) -> Result<&ObjectOutput, StorageError> {
        self.output.as_deref().ok_or_else(|| StorageError::Io {
            action: "publishing",
            path: "an ExactlyOnceObjectSink".into(),
            source: std::io::Error::other("the sink has no output (it was built without `ExactlyOnceObjectSink::new`)"),
        })
    }

    /// Publishes every pending window <= `through`, in order.
    fn publish_through(&mut self, through: WindowId) -> Result<(), StorageError> {
        let output = match &self.output {
            Some(output) => Arc::clone(output),
            None => return self.output().map(|_| ()),
        };
        while let Some((&window, text)) = self.pending.first_key_value() {
            if window > through {
                break;
            }
            if !output.publish(window, text)? {
                tracing::debug!(window = %window, "window already published; left as it is");
            }
            self.pending.remove(&window);
            self.last_published = self.last_published.max(Some(window));
        }
        Ok(())
    }
}

impl<T: Tuple + Display> Operator for ExactlyOnceObjectSink<T> {
    type Input = T;
    type Output = ();

    /// After a restore from checkpoint A, the pending windows are those <=
    /// A (restored); later ones are replayed.
    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        self.output()?;
        self.direct = ctx.storage().is_none();
        self.current = None;
        let activation = ctx.activation_window();
        self.pending.retain(|w, _| *w <= activation);
        Ok(())
    }

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        let published = self.last_published.is_some_and(|last| window <= last);
        self.current = Some((window, (!published).then(String::new)));
        Ok(())
    }

    fn process(&mut self, tuple: T, _out: Output<'_, ()>) -> OperatorResult {
        match self.current.as_mut() {
            Some((_, Some(text))) => {
                // Writing to a String cannot fail.
                let _ = writeln!(text, "{tuple}");
                Ok(())
            }
            Some((_, None)) => Ok(()),
            None => Err("ExactlyOnceObjectSink: a tuple arrived outside a window".into()),
        }
    }

    fn end_window(&mut self, _out: Output<'_, ()>) -> OperatorResult {
        if let Some((window, Some(text))) = self.current.take() {
            self.pending.insert(window, text);
            if self.direct {
                self.publish_through(window)?;
            }
        }
        Ok(())
    }

    /// Publishes the pending windows <= `window`.
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        self.publish_through(window)?;
        Ok(())
    }
}
