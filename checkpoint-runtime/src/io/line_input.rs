//! An idempotent input: a text file, line by line, each window's byte range
//! recorded.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkpoint_core::{Checkpoint, WindowId};
use serde::{Deserialize, Serialize};

use super::{FileOperatorError, WindowDataManager};
use crate::operator::{Emit, InputOperator, OperatorContext, OperatorResult, Output};

/// What a window read: the bytes `start..end` of the file, and whether the
/// input reached the end of the file there (it returned `Done`, ending the
/// stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct LineRange {
    start: u64,
    end: u64,
    last: bool,
}

/// The window the input is in.
#[derive(Debug, Clone, Copy)]
enum Current {
    /// A new window: it reads from `start` on and records what it read.
    Fresh { window: WindowId, start: u64 },
    /// A recorded window: it re-emits exactly `range`.
    Replay {
        window: WindowId,
        range: LineRange,
        emitted: bool,
    },
}

/// The default number of lines one `emit_tuples` call reads.
const DEFAULT_LINES_PER_CALL: usize = 1_000;

/// An idempotent input that reads a text file line by line: after a failure
/// or a restart, every window it replays emits exactly the lines it emitted
/// the first time.
///
/// Each line becomes one `String` tuple, without its `\n` (or `\r\n`); a last
/// line without a newline is a line too. A line that is not UTF-8 fails the
/// operator with an error naming its byte offset. The file is read as it is
/// when each line is reached; it is not followed as it grows, and it must not
/// change while the job may still replay from it.
///
/// Its state is the byte offset reached and whether it reached the end of
/// the file (an input restored from the checkpoint that ended its stream
/// stays done). The path and `lines_per_call` are configuration
/// (`#[checkpoint(config)]`): not saved, and after every restore they are
/// those of the value handed to the DAG in this run, so a job resumed with
/// another path reads that file, from the restored offset.
/// With checkpointing on, it records in a [`WindowDataManager`] (created in
/// `setup` from [`OperatorContext::storage`]) the byte range each window
/// read, in `end_window`, before the window's end goes downstream. After a
/// restore, `setup` reopens the file at the restored offset, and a window
/// that has a record is replayed: its lines, exactly the recorded range, are
/// emitted by the next `emit_tuples` call (or by `end_window` if the window
/// ends before that call), then `emit_tuples` returns [`Emit::Idle`] until
/// the window ends, or [`Emit::Done`] if the recorded window ended the file.
/// Records are purged on `committed` one commit late: `committed(W)` deletes
/// the records up to the *previous* committed window, so a restart that
/// falls back to an older checkpoint (the newest one being corrupt; the
/// runtime retains checkpoints back to the recovery point of the previous
/// commit) still finds the records it replays. Without checkpointing it just
/// reads.
///
/// With [`WindowMode::Tuples`](crate::WindowMode::Tuples) the windows are the
/// same in every run; replays do not depend on it. Use an application window
/// count of 1 for it (replays are per application window).
///
/// # Examples
///
/// ```
/// use checkpoint_core::{Checkpoint, MemoryStorageAgent};
/// use checkpoint_runtime::io::LineInput;
/// use checkpoint_runtime::{Config, Dag, Operator, OperatorResult, Output, Runtime, WindowMode};
/// use std::sync::{Arc, Mutex};
///
/// #[derive(Default, Checkpoint)]
/// struct Collect {
///     #[checkpoint(transient)]
///     lines: Arc<Mutex<Vec<String>>>,
/// }
///
/// impl Operator for Collect {
///     type Input = String;
///     type Output = ();
///     fn process(&mut self, line: String, _out: Output<'_, ()>) -> OperatorResult {
///         self.lines.lock().map_err(|_| "poisoned")?.push(line);
///         Ok(())
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("input.txt");
/// std::fs::write(&path, "first\r\nsecond\nthird")?;
///
/// let lines = Arc::new(Mutex::new(Vec::new()));
/// let mut dag = Dag::new();
/// let input = dag.input("lines", LineInput::new(&path).lines_per_call(2));
/// let collect = dag.operator("collect", Collect { lines: Arc::clone(&lines) });
/// dag.connect(&input, &collect);
/// Runtime::new(
///     Config::default()
///         .storage(MemoryStorageAgent::new())
///         .window_mode(WindowMode::Tuples(2)),
/// )
/// .run(dag)?;
/// assert_eq!(*lines.lock().unwrap(), ["first", "second", "third"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Checkpoint)]
#[checkpoint(version = 2, previous = LineInputV1)]
pub struct LineInput {
    #[checkpoint(config)]
    path: PathBuf,
    offset: u64,
    #[checkpoint(config)]
    lines_per_call: usize,
    #[checkpoint(transient)]
    reader: Option<BufReader<File>>,
    #[checkpoint(transient)]
    window_data: Option<WindowDataManager>,
    /// The newest recorded window when `setup` ran: windows up to it are
    /// replays.
    #[checkpoint(transient)]
    recorded_through: Option<WindowId>,
    #[checkpoint(transient)]
    current: Option<Current>,
    /// The file is exhausted: the input returned `Done`. Saved, so an input
    /// restored from the checkpoint at the end of its stream stays done.
    done: bool,
    /// The newest committed window seen, and the one before it: records are
    /// purged up to the one before.
    #[checkpoint(transient)]
    commits: (Option<WindowId>, Option<WindowId>),
    #[checkpoint(transient)]
    line: Vec<u8>,
}

/// The layout of version 1, which saved the path and `lines_per_call` as
/// state. Its snapshots restore as version 2, with this run's path and
/// `lines_per_call`: the saved ones are dropped.
#[derive(Checkpoint)]
#[checkpoint(version = 1)]
struct LineInputV1 {
    #[allow(dead_code, reason = "read from old snapshots only to be replaced by this run's path")]
    path: PathBuf,
    offset: u64,
    #[allow(
        dead_code,
        reason = "read from old snapshots only to be replaced by this run's value"
    )]
    lines_per_call: usize,
    done: bool,
}

impl From<LineInputV1> for LineInput {
    fn from(old: LineInputV1) -> Self {
        // The runtime sets the configuration after the upgrade; the old
        // path must not be what a resumed job reads.
        LineInput {
            offset: old.offset,
            done: old.done,
            ..LineInput::new(PathBuf::new())
        }
    }
}

impl LineInput {
    /// An input reading `path` from its start, 1,000 lines per
    /// `emit_tuples` call. The file is opened in `setup`; a file that does
    /// not exist is an error there.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::LineInput;
    ///
    /// let input = LineInput::new("/var/log/app.log");
    /// assert_eq!(input.path(), std::path::Path::new("/var/log/app.log"));
    /// assert_eq!(input.offset(), 0);
    /// ```
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LineInput {
            path: path.into(),
            offset: 0,
            lines_per_call: DEFAULT_LINES_PER_CALL,
            reader: None,
            window_data: None,
            recorded_through: None,
            current: None,
            done: false,
            commits: (None, None),
            line: Vec::new(),
        }
    }

    /// Sets how many lines one `emit_tuples` call reads at most (at least
    /// 1). In [`WindowMode::Tuples(n)`](crate::WindowMode::Tuples) a window
    /// ends after the call that brings it to `n` lines, so a divisor of `n`
    /// gives windows of exactly `n` lines.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::LineInput;
    ///
    /// // Windows of exactly 100 lines with `WindowMode::Tuples(100)`.
    /// let input = LineInput::new("words.txt").lines_per_call(10);
    /// # let _ = input;
    /// ```
    pub fn lines_per_call(mut self, lines: usize) -> Self {
        self.lines_per_call = lines.max(1);
        self
    }

    /// The file it reads.
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::LineInput;
    ///
    /// assert_eq!(LineInput::new("words.txt").path().to_str(), Some("words.txt"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The byte offset of the next line to read (part of its state).
    ///
    /// # Examples
    ///
    /// ```
    /// use checkpoint_runtime::io::LineInput;
    ///
    /// assert_eq!(LineInput::new("words.txt").offset(), 0);
    /// ```
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn io_error(&self, action: &str, source: std::io::Error) -> FileOperatorError {
        FileOperatorError::io(action, &self.path, source)
    }

    fn replay_error(&self, window: WindowId, detail: String) -> FileOperatorError {
        FileOperatorError::Replay {
            path: self.path.clone(),
            window,
            detail,
        }
    }

    /// Reads the next line into `self.line`, advancing the offset; `None` at
    /// the end of the file.
    fn read_line(&mut self) -> Result<Option<String>, FileOperatorError> {
        let Some(reader) = self.reader.as_mut() else {
            return Err(FileOperatorError::Lifecycle {
                operator: "LineInput",
                what: "read before `setup` opened the file",
            });
        };
        self.line.clear();
        let read = match reader.read_until(b'\n', &mut self.line) {
            Ok(read) => read,
            Err(e) => return Err(self.io_error("reading", e)),
        };
        if read == 0 {
            return Ok(None);
        }
        let start = self.offset;
        self.offset += read as u64;
        let mut text: &[u8] = &self.line;
        if let Some(rest) = text.strip_suffix(b"\n") {
            text = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        match std::str::from_utf8(text) {
            Ok(text) => Ok(Some(text.to_owned())),
            Err(_) => Err(FileOperatorError::NotUtf8 {
                path: self.path.clone(),
                offset: start,
            }),
        }
    }

    fn at_end_of_file(&mut self) -> Result<bool, FileOperatorError> {
        match self.reader.as_mut().map(BufRead::fill_buf) {
            Some(Ok(buffered)) => Ok(buffered.is_empty()),
            Some(Err(e)) => Err(self.io_error("reading", e)),
            None => Ok(true),
        }
    }

    /// Emits exactly the lines of `range`, which must start where the input
    /// is.
    fn emit_range(&mut self, window: WindowId, range: LineRange, out: Output<'_, String>) -> OperatorResult {
        if self.offset != range.start {
            return Err(self
                .replay_error(
                    window,
                    format!(
                        "its record starts at byte {} but the input is at byte {}; the window data does not \
                         belong to the checkpoint the input was restored from",
                        range.start, self.offset
                    ),
                )
                .into());
        }
        while self.offset < range.end {
            match self.read_line()? {
                Some(line) => out.emit(line),
                None => {
                    return Err(self
                        .replay_error(
                            window,
                            format!(
                                "it read bytes {}..{} but the file now ends at byte {}: the file changed",
                                range.start, range.end, self.offset
                            ),
                        )
                        .into());
                }
            }
        }
        if self.offset != range.end {
            return Err(self
                .replay_error(
                    window,
                    format!(
                        "it read bytes {}..{} but a line now ends at byte {}: the file changed",
                        range.start, range.end, self.offset
                    ),
                )
                .into());
        }
        if range.last {
            self.done = true;
        }
        Ok(())
    }
}

impl InputOperator for LineInput {
    type Output = String;

    /// Opens the file at the saved offset and, with checkpointing on,
    /// creates the window data manager under the operator's name.
    fn setup(&mut self, ctx: &OperatorContext) -> OperatorResult {
        if self.path.to_str().is_none() {
            return Err(FileOperatorError::PathNotUtf8 {
                path: self.path.clone(),
            }
            .into());
        }
        let mut file = File::open(&self.path).map_err(|e| self.io_error("opening the input file", e))?;
        let len = file
            .metadata()
            .map_err(|e| self.io_error("reading the metadata of", e))?
            .len();
        if self.offset > len {
            return Err(FileOperatorError::Replay {
                path: self.path.clone(),
                window: ctx.activation_window(),
                detail: format!(
                    "the checkpoint is at byte {} but the file has only {len} bytes: the file changed",
                    self.offset
                ),
            }
            .into());
        }
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|e| self.io_error("seeking in", e))?;
        self.reader = Some(BufReader::new(file));
        self.current = None;
        self.commits = (None, None);
        self.window_data = ctx
            .storage()
            .map(|storage| WindowDataManager::new(Arc::clone(storage), ctx.name()));
        self.recorded_through = match &self.window_data {
            Some(data) => data.largest_recorded()?,
            None => None,
        };
        Ok(())
    }

    fn begin_window(&mut self, window: WindowId) -> OperatorResult {
        let replay = self.recorded_through.is_some_and(|through| window <= through);
        self.current = Some(match (&self.window_data, replay) {
            (Some(data), true) => match data.load::<LineRange>(window)? {
                Some(range) => Current::Replay {
                    window,
                    range,
                    emitted: false,
                },
                None => {
                    return Err(self
                        .replay_error(
                            window,
                            format!(
                                "it has no record, though window {} has one (were records purged too early?)",
                                self.recorded_through.map_or_else(String::new, |w| w.to_string())
                            ),
                        )
                        .into());
                }
            },
            _ => Current::Fresh {
                window,
                start: self.offset,
            },
        });
        Ok(())
    }

    fn emit_tuples(&mut self, out: Output<'_, String>) -> OperatorResult<Emit> {
        match self.current {
            Some(Current::Replay {
                window,
                range,
                emitted: false,
            }) => {
                self.emit_range(window, range, out)?;
                self.current = Some(Current::Replay {
                    window,
                    range,
                    emitted: true,
                });
                return Ok(if range.last { Emit::Done } else { Emit::Continue });
            }
            Some(Current::Replay { range, .. }) => {
                return Ok(if range.last { Emit::Done } else { Emit::Idle });
            }
            Some(Current::Fresh { .. }) | None => {}
        }
        if self.done {
            return Ok(Emit::Done);
        }
        for _ in 0..self.lines_per_call {
            match self.read_line()? {
                Some(line) => out.emit(line),
                None => break,
            }
        }
        if self.at_end_of_file()? {
            self.done = true;
            return Ok(Emit::Done);
        }
        Ok(Emit::Continue)
    }

    /// Records a fresh window's byte range (before the runtime sends the
    /// window's end downstream); emits a replayed window's lines if no
    /// `emit_tuples` call came in it.
    fn end_window(&mut self, out: Output<'_, String>) -> OperatorResult {
        match self.current.take() {
            Some(Current::Replay {
                window,
                range,
                emitted: false,
            }) => self.emit_range(window, range, out)?,
            Some(Current::Replay { .. }) | None => {}
            Some(Current::Fresh { window, start }) => {
                if let Some(data) = &self.window_data {
                    let range = LineRange {
                        start,
                        end: self.offset,
                        last: self.done,
                    };
                    data.save(window, &range).map_err(FileOperatorError::from)?;
                }
            }
        }
        Ok(())
    }

    /// Purges the records up to the previously committed window.
    fn committed(&mut self, window: WindowId) -> OperatorResult {
        let (latest, _) = self.commits;
        if latest.is_none_or(|latest| window > latest) {
            self.commits = (Some(window), latest);
        }
        if let (Some(data), (_, Some(previous))) = (&self.window_data, self.commits) {
            data.committed(previous).map_err(FileOperatorError::from)?;
        }
        Ok(())
    }

    fn teardown(&mut self) {
        self.reader = None;
    }
}
