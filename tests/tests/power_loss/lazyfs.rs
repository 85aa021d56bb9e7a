//! A FUSE file system that loses, at a simulated power cut, everything that
//! was not fsync'd: the model of LazyFS (which Jepsen uses), in memory.
//!
//! Every inode keeps two states: what was written (what processes see while
//! the power is on) and what is durable. A file's data becomes durable when
//! the file is fsync'd; a directory's entries (creates, renames, unlinks,
//! `mkdir`s) become durable only when that directory is fsync'd, as POSIX
//! requires: fsyncing a file does not make its name durable, and fsyncing a
//! directory does not make the directory's own entry in its parent durable.
//!
//! A rename between two directories is two entry changes, each made durable
//! by an fsync of its own directory: after a cut the file may be found under
//! both names, sharing its data (the strictest reading of POSIX; a
//! journaling file system would commit both sides at once). Inodes are never
//! freed before a cut, so a durable entry always finds its inode.
//!
//! A cut is armed with a [`Trigger`]: when it fires, the power goes off at
//! once (that operation and every later one fails with `EIO` and changes
//! nothing), and the test is told. The test then kills the process using
//! the mount, unmounts, applies [`LazyFs::power_cut`] (only what is
//! reachable from the root through durable entries is kept, each inode with
//! its durable contents) and mounts again: as after a reboot, nothing of the
//! kernel's caches survives either.
//!
//! Read faults: [`LazyFs::fail_reads`] makes reading a file fail with a
//! chosen errno, as a disk or a permission would: at every `open` of it
//! ([`FailAt::Open`], as `EACCES` for a file of mode 000, which root cannot
//! get from `chmod`) or at every `read` once it is open ([`FailAt::Read`],
//! as `EIO` from a bad sector). It applies to the regular files at a path
//! (relative to the mount, `/`-separated) or under it, matched by their live
//! name at each call. `lookup`, `getattr`, listing, creating, renaming and
//! unlinking still work: the file is listed as a regular file and can be
//! moved or replaced, not read. [`LazyFs::clear_read_faults`] ends every
//! fault. A fault changes nothing in the model and counts as no operation
//! for [`Trigger`]s. [`LazyFs::tree`] shows what processes see, read from
//! the model itself, past any fault: tests compare it before and after a
//! run to prove that the run changed nothing.
//!
//! Locks: the file system does not ask the kernel for FUSE lock requests,
//! so `flock` and `fcntl` locks (`File::try_lock`) are kept by the kernel
//! for this mount and work between processes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    Request, TimeOrNow, WriteFlags,
};

/// Kernel caches are not relied on: every lookup and attribute comes from
/// the model.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;
/// How many recent operations are kept for failure messages.
const RECENT: usize = 40;

/// What changes state, for [`Trigger`]s and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Mkdir,
    Create,
    Write,
    Truncate,
    Rename,
    Unlink,
    Rmdir,
    Fsync,
    Fsyncdir,
}

/// When an armed cut fires. Only operations that change state count
/// ([`OpKind`]); the operation at which it fires is not applied.
#[derive(Debug, Clone)]
pub(crate) struct Trigger {
    /// Count only once the `n`-th (1-based) operation of this kind on this
    /// path (relative to the mount, `/`-separated; a rename's path is its
    /// target) has been applied; `None`: from now.
    pub after: Option<(OpKind, String, u32)>,
    /// How many more operations are applied before the cut.
    pub then: u64,
}

impl Trigger {
    /// A cut before the `n`-th state-changing operation from now (0: the
    /// next one).
    pub(crate) fn after_ops(n: u64) -> Trigger {
        Trigger { after: None, then: n }
    }

    /// A cut `then` operations after the `nth` `kind` on `path`.
    pub(crate) fn after(kind: OpKind, path: impl Into<String>, nth: u32, then: u64) -> Trigger {
        Trigger {
            after: Some((kind, path.into(), nth)),
            then,
        }
    }
}

/// Where a read fault ([`LazyFs::fail_reads`]) fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailAt {
    /// Opening the file fails.
    Open,
    /// Opening succeeds; every read fails.
    Read,
}

/// A read fault: files at or under `path` fail at `at` with `errno`.
struct ReadFault {
    path: String,
    at: FailAt,
    errno: Errno,
}

/// What one path holds, in [`LazyFs::tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    Dir,
    File(Vec<u8>),
}

enum Node {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
    },
    Dir {
        live: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

struct Inode {
    node: Node,
    /// The live entry naming it, for paths in triggers and the log.
    parent: u64,
    name: OsString,
}

struct Armed {
    trigger: Trigger,
    /// Operations seen matching `trigger.after`.
    seen: u32,
    on_cut: Box<dyn FnOnce(String) + Send>,
}

struct Model {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    /// The power is off: everything fails until [`LazyFs::power_cut`].
    off: bool,
    armed: Option<Armed>,
    /// No cut fires once this path is durable.
    horizon: Option<String>,
    ops: u64,
    recent: VecDeque<String>,
    /// Read faults, in the order set: the first that matches applies.
    faults: Vec<ReadFault>,
    uid: u32,
    gid: u32,
}

/// The file system: cheap to clone, every clone (and every mount) shares
/// one model, which outlives mounts as a disk outlives reboots.
#[derive(Clone)]
pub(crate) struct LazyFs {
    model: Arc<Mutex<Model>>,
}

impl LazyFs {
    /// An empty file system (its root directory is durable).
    pub(crate) fn new() -> LazyFs {
        let mut inodes = HashMap::new();
        inodes.insert(
            ROOT,
            Inode {
                node: Node::Dir {
                    live: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                parent: ROOT,
                name: OsString::new(),
            },
        );
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        LazyFs {
            model: Arc::new(Mutex::new(Model {
                inodes,
                next_ino: ROOT + 1,
                off: false,
                armed: None,
                horizon: None,
                ops: 0,
                recent: VecDeque::new(),
                faults: Vec::new(),
                uid,
                gid,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mounts the file system at `at` (an empty directory).
    pub(crate) fn mount(&self, at: &Path) -> io::Result<Mount> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("lazyfs".to_owned()),
            fuser::MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount(Session(self.clone()), at, &config)?;
        Ok(Mount {
            at: at.to_path_buf(),
            session: Some(session),
        })
    }

    /// Arms a cut; `on_cut` is called (on the file system's thread) with
    /// the operation it fired at. Replaces an armed cut that has not fired.
    pub(crate) fn arm(&self, trigger: Trigger, on_cut: impl FnOnce(String) + Send + 'static) {
        self.lock().armed = Some(Armed {
            trigger,
            seen: 0,
            on_cut: Box::new(on_cut),
        });
    }

    /// Drops an armed cut that has not fired.
    pub(crate) fn disarm(&self) {
        self.lock().armed = None;
    }

    /// From the moment `path` is durable, armed cuts no longer fire.
    pub(crate) fn set_horizon(&self, path: impl Into<String>) {
        self.lock().horizon = Some(path.into());
    }

    /// Turns the power off now, if it is not off already.
    pub(crate) fn power_off(&self) {
        let mut model = self.lock();
        model.off = true;
        model.armed = None;
    }

    /// The power cut: keeps only what is reachable from the root through
    /// durable entries, each inode with its durable contents, and turns the
    /// power back on. Call it while unmounted, as a reboot would.
    pub(crate) fn power_cut(&self) {
        let mut model = self.lock();
        let mut kept: HashMap<u64, (u64, OsString)> = HashMap::new();
        let mut stack = vec![(ROOT, ROOT, OsString::new())];
        while let Some((ino, parent, name)) = stack.pop() {
            if kept.contains_key(&ino) {
                continue;
            }
            kept.insert(ino, (parent, name));
            if let Some(Inode {
                node: Node::Dir { durable, .. },
                ..
            }) = model.inodes.get(&ino)
            {
                stack.extend(durable.iter().map(|(n, child)| (*child, ino, n.clone())));
            }
        }
        model.inodes.retain(|ino, _| kept.contains_key(ino));
        for (ino, inode) in &mut model.inodes {
            let (parent, name) = kept[ino].clone();
            inode.parent = parent;
            inode.name = name;
            match &mut inode.node {
                Node::File { data, durable } => data.clone_from(durable),
                Node::Dir { live, durable } => live.clone_from(durable),
            }
        }
        model.off = false;
        model.armed = None;
        model.recent.push_back("-- power cut --".to_owned());
    }

    /// From now on, reading a regular file at `path` or under it (relative
    /// to the mount) fails with `errno` at `at`, until
    /// [`clear_read_faults`](Self::clear_read_faults).
    pub(crate) fn fail_reads(&self, path: impl Into<String>, at: FailAt, errno: Errno) {
        self.lock().faults.push(ReadFault {
            path: path.into(),
            at,
            errno,
        });
    }

    /// Removes every read fault: files read normally again.
    pub(crate) fn clear_read_faults(&self) {
        self.lock().faults.clear();
    }

    /// What processes see now (not what is durable): every path reachable
    /// from the root, relative to the mount, with each file's bytes. Read
    /// from the model, so neither the kernel nor a read fault is in the way.
    pub(crate) fn tree(&self) -> BTreeMap<String, Entry> {
        let model = self.lock();
        let mut tree = BTreeMap::new();
        let mut stack = vec![(ROOT, String::new())];
        while let Some((ino, path)) = stack.pop() {
            match model.inodes.get(&ino).map(|i| &i.node) {
                Some(Node::Dir { live, .. }) => {
                    for (name, child) in live {
                        let name = name.to_string_lossy();
                        let child_path = if path.is_empty() {
                            name.into_owned()
                        } else {
                            format!("{path}/{name}")
                        };
                        stack.push((*child, child_path));
                    }
                    if ino != ROOT {
                        tree.insert(path, Entry::Dir);
                    }
                }
                Some(Node::File { data, .. }) => {
                    tree.insert(path, Entry::File(data.clone()));
                }
                None => {}
            }
        }
        tree
    }

    /// The last operations, oldest first, for failure messages.
    pub(crate) fn recent_ops(&self) -> Vec<String> {
        self.lock().recent.iter().cloned().collect()
    }
}

/// A mounted [`LazyFs`]; unmounted on drop, even when a test fails.
pub(crate) struct Mount {
    at: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl Mount {
    /// Unmounts and waits for the file system's thread to end.
    pub(crate) fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let path = std::ffi::CString::new(self.at.as_os_str().as_encoded_bytes())?;
        let mut busy_tries = 0;
        loop {
            // SAFETY: `path` is a valid NUL-terminated string for the call.
            if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The kernel still releases the files of a process just
                // killed: they keep the mount busy for a moment.
                Some(libc::EBUSY) if busy_tries < 500 => {
                    busy_tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                // Not mounted (any more).
                Some(libc::EINVAL) => break,
                _ => {
                    // SAFETY: as above. A lazy unmount cannot be busy.
                    unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
                    return Err(e);
                }
            }
        }
        match session.join() {
            Ok(()) => Ok(()),
            // The kernel aborts the connection when it unmounts with a
            // request still in flight (a killed job's): the session is over
            // all the same.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
            Err(e) => Err(io::Error::other(format!("the FUSE session ended with an error: {e}"))),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            eprintln!("lazyfs: unmounting {}: {e}", self.at.display());
        }
    }
}

impl Model {
    fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.inode(dir)?.node {
            Node::Dir { live, .. } => Ok(live),
            Node::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.inodes.get_mut(&dir).ok_or(Errno::ENOENT)?.node {
            Node::Dir { live, .. } => Ok(live),
            Node::File { .. } => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn path(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut current = ino;
        while current != ROOT {
            let Some(inode) = self.inodes.get(&current) else { break };
            parts.push(inode.name.to_string_lossy().into_owned());
            current = inode.parent;
        }
        parts.reverse();
        parts.join("/")
    }

    fn child_path(&self, dir: u64, name: &OsStr) -> String {
        let parent = self.path(dir);
        let name = name.to_string_lossy();
        if parent.is_empty() {
            name.into_owned()
        } else {
            format!("{parent}/{name}")
        }
    }

    fn is_durable(&self, path: &str) -> bool {
        let mut current = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let next = match self.inodes.get(&current).map(|i| &i.node) {
                Some(Node::Dir { durable, .. }) => durable.get(OsStr::new(part)).copied(),
                _ => None,
            };
            match next {
                Some(next) => current = next,
                None => return false,
            }
        }
        true
    }

    /// Called before a state-changing operation: fails it if the power is
    /// off, or turns the power off here if an armed cut fires.
    fn begin(&mut self, kind: OpKind, path: &str) -> Result<(), Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        let past_horizon = self.horizon.as_deref().is_some_and(|h| self.is_durable(h));
        if past_horizon {
            self.armed = None;
        }
        if let Some(armed) = &mut self.armed
            && armed
                .trigger
                .after
                .as_ref()
                .is_none_or(|(_, _, nth)| armed.seen >= *nth)
        {
            if armed.trigger.then == 0 {
                let armed = self.armed.take().expect("armed");
                self.off = true;
                let at = format!("{kind:?} {path}");
                self.recent.push_back(format!("-- power off before: {at} --"));
                (armed.on_cut)(at);
                return Err(Errno::EIO);
            }
            armed.trigger.then -= 1;
        }
        self.ops += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("#{} {kind:?} {path}", self.ops));
        Ok(())
    }

    /// Called after a state-changing operation was applied.
    fn applied(&mut self, kind: OpKind, path: &str) {
        if let Some(armed) = &mut self.armed
            && armed
                .trigger
                .after
                .as_ref()
                .is_some_and(|(k, p, _)| *k == kind && p == path)
        {
            armed.seen += 1;
        }
    }

    fn new_inode(&mut self, parent: u64, name: &OsStr, node: Node) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(
            ino,
            Inode {
                node,
                parent,
                name: name.to_owned(),
            },
        );
        ino
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let (kind, size, perm, nlink) = match &self.inode(ino)?.node {
            Node::File { data, .. } => (FileType::RegularFile, data.len() as u64, 0o644, 1),
            Node::Dir { .. } => (FileType::Directory, 0, 0o755, 2),
        };
        let time = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        self.attr(self.child(parent, name)?)
    }

    fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        self.attr(ino)
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let path = self.path(ino);
        if !matches!(self.inode(ino)?.node, Node::File { .. }) {
            return Err(Errno::EISDIR);
        }
        self.begin(OpKind::Truncate, &path)?;
        if let Some(Inode {
            node: Node::File { data, .. },
            ..
        }) = self.inodes.get_mut(&ino)
        {
            data.resize(usize::try_from(size).map_err(|_| Errno::EFBIG)?, 0);
        }
        self.applied(OpKind::Truncate, &path);
        Ok(())
    }

    fn mkdir(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let path = self.child_path(parent, name);
        self.begin(OpKind::Mkdir, &path)?;
        let ino = self.new_inode(
            parent,
            name,
            Node::Dir {
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.applied(OpKind::Mkdir, &path);
        self.attr(ino)
    }

    fn create(&mut self, parent: u64, name: &OsStr, flags: i32) -> Result<FileAttr, Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        if let Some(&ino) = self.entries(parent)?.get(name) {
            if flags & libc::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            if matches!(self.inode(ino)?.node, Node::Dir { .. }) {
                return Err(Errno::EISDIR);
            }
            if flags & libc::O_TRUNC != 0 {
                self.truncate(ino, 0)?;
            }
            return self.attr(ino);
        }
        let path = self.child_path(parent, name);
        self.begin(OpKind::Create, &path)?;
        let ino = self.new_inode(
            parent,
            name,
            Node::File {
                data: Vec::new(),
                durable: Vec::new(),
            },
        );
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.applied(OpKind::Create, &path);
        self.attr(ino)
    }

    fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        let path = self.path(ino);
        if !matches!(self.inode(ino)?.node, Node::File { .. }) {
            return Err(Errno::EISDIR);
        }
        self.begin(OpKind::Write, &path)?;
        if let Some(Inode {
            node: Node::File { data, .. },
            ..
        }) = self.inodes.get_mut(&ino)
        {
            let start = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
            let end = start + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(bytes);
        }
        self.applied(OpKind::Write, &path);
        u32::try_from(bytes.len()).map_err(|_| Errno::EINVAL)
    }

    /// Fails with the errno of the first read fault on this file at `at`.
    fn read_fault(&self, ino: u64, at: FailAt) -> Result<(), Errno> {
        if self.faults.is_empty() || !matches!(self.inode(ino)?.node, Node::File { .. }) {
            return Ok(());
        }
        let path = self.path(ino);
        let under = |fault: &ReadFault| {
            path.strip_prefix(fault.path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        match self.faults.iter().find(|f| f.at == at && under(f)) {
            Some(fault) => Err(fault.errno),
            None => Ok(()),
        }
    }

    fn open(&self, ino: u64) -> Result<(), Errno> {
        self.getattr(ino)?;
        self.read_fault(ino, FailAt::Open)
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        self.read_fault(ino, FailAt::Read)?;
        match &self.inode(ino)?.node {
            Node::File { data, .. } => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                Ok(data[start..end].to_vec())
            }
            Node::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        let ino = self.child(parent, name)?;
        match (&self.inode(ino)?.node, dir) {
            (Node::File { .. }, true) => return Err(Errno::ENOTDIR),
            (Node::Dir { .. }, false) => return Err(Errno::EISDIR),
            (Node::Dir { live, .. }, true) if !live.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        let kind = if dir { OpKind::Rmdir } else { OpKind::Unlink };
        let path = self.child_path(parent, name);
        self.begin(kind, &path)?;
        self.entries_mut(parent)?.remove(name);
        self.applied(kind, &path);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        let ino = self.child(parent, name)?;
        let is_dir = matches!(self.inode(ino)?.node, Node::Dir { .. });
        if let Some(&target) = self.entries(new_parent)?.get(new_name) {
            if target == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            match (&self.inode(target)?.node, is_dir) {
                (Node::Dir { .. }, false) => return Err(Errno::EISDIR),
                (Node::File { .. }, true) => return Err(Errno::ENOTDIR),
                (Node::Dir { live, .. }, true) if !live.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        let path = self.child_path(new_parent, new_name);
        self.begin(OpKind::Rename, &path)?;
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?.insert(new_name.to_owned(), ino);
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_owned();
        }
        self.applied(OpKind::Rename, &path);
        Ok(())
    }

    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        let path = self.path(ino);
        let kind = match self.inode(ino)?.node {
            Node::File { .. } => OpKind::Fsync,
            Node::Dir { .. } => OpKind::Fsyncdir,
        };
        self.begin(kind, &path)?;
        match &mut self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)?.node {
            Node::File { data, durable } => durable.clone_from(data),
            Node::Dir { live, durable } => durable.clone_from(live),
        }
        self.applied(kind, &path);
        Ok(())
    }

    fn readdir(&self, ino: u64) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        if self.off {
            return Err(Errno::EIO);
        }
        let parent = self.inode(ino)?.parent;
        let mut list = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in self.entries(ino)? {
            let kind = match self.inode(*child)?.node {
                Node::File { .. } => FileType::RegularFile,
                Node::Dir { .. } => FileType::Directory,
            };
            list.push((*child, kind, name.clone()));
        }
        Ok(list)
    }
}

/// The mounted side: every call locks the shared model briefly.
struct Session(LazyFs);

impl Session {
    fn model(&self) -> MutexGuard<'_, Model> {
        self.0.lock()
    }
}

/// No page cache: every read and write reaches the model.
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

impl Filesystem for Session {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.model().lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.model().getattr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut model = self.model();
        let result = match size {
            Some(size) => model.truncate(ino.0, size),
            // Modes and times are not modelled.
            None if model.off => Err(Errno::EIO),
            None => Ok(()),
        };
        match result.and_then(|()| model.attr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        match self.model().mkdir(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.model().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.model().remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.model().rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().open(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), OPEN_FLAGS),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.model().read(ino.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.model().write(ino.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Nothing is buffered here: data is in the model (not durable).
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.model().fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().getattr(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let list = match self.model().readdir(ino.0) {
            Ok(list) => list,
            Err(e) => return reply.error(e),
        };
        for (i, (child, kind, name)) in list.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.model().fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.model().create(parent.0, name, flags) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), OPEN_FLAGS),
            Err(e) => reply.error(e),
        }
    }
}
