//! The lease that keeps a second job off a prefix: an object store has no
//! locks, so a job holds `<prefix>/.lease` by rewriting it (a conditional
//! put on its own last version) every third of the lease period, and a
//! starting job that finds it held waits one lease period for a renewal
//! before it treats the holder as dead and takes it over.
//!
//! No clocks are compared between machines: a starter measures the
//! holder's silence on its own clock, and a holder whose renewals have
//! failed for half a lease period refuses to write or delete
//! ([`StorageError::LeaseUncertain`]) before anyone can have taken over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use checkpoint_core::{StorageError, StorageLock};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use tokio::runtime::Runtime;

/// What a lease object says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: String,
    lease: Duration,
    held: bool,
    beat: u64,
}

impl Record {
    fn to_bytes(&self) -> Vec<u8> {
        format!(
            "holder={}\nlease_ms={}\nstate={}\nbeat={}\n",
            self.holder,
            self.lease.as_millis(),
            if self.held { "held" } else { "released" },
            self.beat
        )
        .into_bytes()
    }

    /// `None` for bytes that are not a lease record.
    fn parse(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        };
        Some(Record {
            holder: field("holder")?.to_owned(),
            lease: Duration::from_millis(field("lease_ms")?.parse().ok()?),
            held: match field("state")? {
                "held" => true,
                "released" => false,
                _ => return None,
            },
            beat: field("beat")?.parse().ok()?,
        })
    }
}

/// An object's bytes and its ETag.
type Versioned = (Vec<u8>, Option<String>);

/// Where the lease lives and how it is reached.
pub(crate) struct LeaseTarget {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) path: Path,
    /// The storage as messages name it ("s3://bucket/job").
    pub(crate) what: String,
    pub(crate) lease: Duration,
}

/// What the renewing thread, [`StorageLock::check`] and the agent's own
/// writes share.
pub(crate) struct Shared {
    lost: AtomicBool,
    /// When the newest successful renewal was sent.
    renewed: Mutex<Instant>,
    /// Who took the lease over, once someone did.
    taker: Mutex<Option<String>>,
    what: String,
    lease: Duration,
}

impl Shared {
    /// Until when the lease can be vouched for (the newest renewal plus half
    /// a period), or `None` once it was taken over.
    pub(crate) fn valid_until(&self) -> Option<Instant> {
        if self.lost.load(Ordering::SeqCst) {
            return None;
        }
        Some(*self.renewed.lock().unwrap_or_else(PoisonError::into_inner) + self.lease / 2)
    }

    /// `Ok` while the lease is surely held: not taken over, and renewed
    /// within the last half period.
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        if self.lost.load(Ordering::SeqCst) {
            let taker = self.taker.lock().unwrap_or_else(PoisonError::into_inner).clone();
            return Err(StorageError::Superseded {
                what: self.what.clone(),
                detail: format!(
                    "its lease was taken by {}",
                    taker.unwrap_or_else(|| "another job".to_owned())
                ),
            });
        }
        let silent = self.renewed.lock().unwrap_or_else(PoisonError::into_inner).elapsed();
        if silent > self.lease / 2 {
            return Err(StorageError::LeaseUncertain {
                what: self.what.clone(),
                detail: format!("no renewal succeeded for {silent:?} (the lease is {:?})", self.lease),
            });
        }
        Ok(())
    }
}

/// Takes the lease, waiting up to one lease period of the holder's to see
/// whether a holder is alive; [`StorageError::Locked`] if it is.
pub(crate) fn acquire(target: LeaseTarget) -> Result<(StorageLock, std::sync::Weak<Shared>), StorageError> {
    let holder = holder_id();
    let mut record = Record {
        holder,
        lease: target.lease,
        held: true,
        beat: 0,
    };
    // The holder's version as first seen, and since when it has not changed.
    let mut watched: Option<(Option<String>, Instant)> = None;
    loop {
        let sent = Instant::now();
        let found = target.get()?;
        let taken = match found {
            None => target.put(&record, PutMode::Create)?,
            Some((bytes, e_tag)) => {
                let current = Record::parse(&bytes);
                let free = current.as_ref().is_some_and(|r| !r.held);
                let update = PutMode::Update(UpdateVersion {
                    e_tag: e_tag.clone(),
                    version: None,
                });
                if free {
                    target.put(&record, update)?
                } else {
                    // Held (or unreadable, which is treated as held: only a
                    // person writes something else there).
                    let lease = current.as_ref().map_or(target.lease, |r| r.lease);
                    match &watched {
                        Some((seen, _)) if *seen != e_tag => {
                            return Err(StorageError::Locked {
                                what: target.what.clone(),
                                path: lease_path_text(&target),
                            });
                        }
                        Some((_, since)) if since.elapsed() >= lease => {
                            tracing::warn!(
                                storage = %target.what,
                                holder = current.as_ref().map_or("?", |r| r.holder.as_str()),
                                "taking over a lease its holder stopped renewing"
                            );
                            record.beat = current.map_or(0, |r| r.beat + 1);
                            target.put(&record, update)?
                        }
                        Some((_, since)) => {
                            std::thread::sleep((lease / 4).min(lease.saturating_sub(since.elapsed())));
                            None
                        }
                        None => {
                            watched = Some((e_tag, Instant::now()));
                            std::thread::sleep(lease / 4);
                            None
                        }
                    }
                }
            }
        };
        if let Some(e_tag) = taken {
            return Ok(hold(target, record, e_tag, sent));
        }
    }
}

/// Starts renewing a lease just taken (`e_tag` its version, `sent` when the
/// put that took it was sent).
fn hold(
    target: LeaseTarget,
    record: Record,
    e_tag: Option<String>,
    sent: Instant,
) -> (StorageLock, std::sync::Weak<Shared>) {
    let shared = Arc::new(Shared {
        lost: AtomicBool::new(false),
        renewed: Mutex::new(sent),
        taker: Mutex::new(None),
        what: target.what.clone(),
        lease: target.lease,
    });
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("checkpoint-lease".to_owned())
            .spawn(move || renew(&target, record, e_tag, &shared, &stop_rx))
    };
    let guard = Guard {
        stop: Some(stop_tx),
        thread: thread.ok(),
    };
    let weak = Arc::downgrade(&shared);
    (StorageLock::holding_checked(guard, move || shared.check()), weak)
}

/// Stops the renewals and releases the lease when the job lets go.
struct Guard {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The renewing thread: a conditional put every third of the lease until
/// told to stop (then a release) or until someone else wrote the lease.
fn renew(
    target: &LeaseTarget,
    mut record: Record,
    mut e_tag: Option<String>,
    shared: &Shared,
    stop: &mpsc::Receiver<()>,
) {
    let period = target.lease / 3;
    loop {
        let stopping = match stop.recv_timeout(period) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
        };
        let mut next = record.clone();
        next.beat += 1;
        next.held = !stopping;
        let sent = Instant::now();
        let update = PutMode::Update(UpdateVersion {
            e_tag: e_tag.clone(),
            version: None,
        });
        match target.put_within(&next, update, period) {
            Ok(Some(new)) => {
                record = next;
                e_tag = new;
                *shared.renewed.lock().unwrap_or_else(PoisonError::into_inner) = sent;
            }
            Ok(None) => {
                let taker = target
                    .get()
                    .ok()
                    .flatten()
                    .and_then(|(bytes, _)| Record::parse(&bytes))
                    .map(|r| r.holder);
                tracing::error!(storage = %target.what, taker = ?taker, "lease taken over by another job");
                *shared.taker.lock().unwrap_or_else(PoisonError::into_inner) = taker;
                shared.lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::warn!(storage = %target.what, error = %e, "lease renewal failed; retrying");
                if stopping {
                    // Not released: the next job waits one lease period.
                    return;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

impl LeaseTarget {
    /// The lease object and its version, if there is one.
    fn get(&self) -> Result<Option<Versioned>, StorageError> {
        let result = self.runtime.block_on(async {
            let got = self.store.get(&self.path).await?;
            let e_tag = got.meta.e_tag.clone();
            Ok::<_, object_store::Error>((got.bytes().await?.to_vec(), e_tag))
        });
        match result {
            Ok(found) => Ok(Some(found)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(crate::store_error("reading", &self.path, e)),
        }
    }

    fn put(&self, record: &Record, mode: PutMode) -> Result<Option<Option<String>>, StorageError> {
        self.put_within(record, mode, Duration::from_secs(3600))
    }

    /// A conditional put of `record`: `Some(version)` if it was written,
    /// `None` if the condition failed. A put whose condition failed only
    /// because a retry of it found its own first attempt written counts as
    /// written.
    fn put_within(
        &self,
        record: &Record,
        mode: PutMode,
        limit: Duration,
    ) -> Result<Option<Option<String>>, StorageError> {
        let bytes = record.to_bytes();
        let put = self
            .store
            .put_opts(&self.path, PutPayload::from(bytes.clone()), PutOptions::from(mode));
        // The timer must be made inside the runtime.
        match self.runtime.block_on(async { tokio::time::timeout(limit, put).await }) {
            Err(_) => Err(crate::io_error(
                "writing",
                self.path.as_ref(),
                std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {limit:?}")),
            )),
            Ok(Ok(result)) => Ok(Some(result.e_tag)),
            Ok(Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. })) => {
                match self.get()? {
                    Some((found, e_tag)) if found == bytes => Ok(Some(e_tag)),
                    _ => Ok(None),
                }
            }
            Ok(Err(e)) => Err(crate::store_error("writing", &self.path, e)),
        }
    }
}

fn lease_path_text(target: &LeaseTarget) -> std::path::PathBuf {
    std::path::PathBuf::from(target.path.as_ref())
}

/// Who holds a lease, as the message of a job refused names it: the
/// process and machine, and a number no other holder has.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let nonce = checkpoint_core::splitmix64((nanos as u64) ^ u64::from(std::process::id()).rotate_left(32));
    format!("process {} on {host} (run {nonce:016x})", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_junk_is_refused() {
        let record = Record {
            holder: "process 7 on h (run 00ff)".to_owned(),
            lease: Duration::from_millis(1500),
            held: true,
            beat: 9,
        };
        assert_eq!(Record::parse(&record.to_bytes()), Some(record.clone()));
        let released = Record { held: false, ..record };
        assert_eq!(Record::parse(&released.to_bytes()), Some(released));
        assert_eq!(Record::parse(b"holder=x\nlease_ms=10\nstate=maybe\nbeat=1\n"), None);
        assert_eq!(Record::parse(b"\xff\xfe"), None);
        assert_eq!(Record::parse(b""), None);
    }
}
