//! Crash safety of `FsStorageAgent::save`, with real processes killed by
//! SIGKILL.
//!
//! A child process (this test binary, re-run with `CKPT_CRASH_DIR` set)
//! saves snapshots of a known value per window in a loop, deleting old ones
//! as a job's retention would, and prints `saved <seq>` after each save
//! returns. The parent kills it 50 times: half at a chosen point of the save
//! protocol (the child kills itself from the storage agent's phase hook),
//! half from outside at a random moment after a random number of progress
//! lines. After every kill, every window `windows()` lists must load and
//! decode to exactly the value saved for it, and the windows the child
//! reported saved must be there.
//!
//! SIGKILL kills the process, not the machine: the kernel's page cache
//! survives, so this test proves the rename protocol (never a partial file
//! under a final name, never a listed temp file) but cannot prove that the
//! fsyncs make the data durable across a power loss. That rests on the
//! fsync of the file before the rename and of the directory after it.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_core::{
    Checkpoint, FsStorageAgent, LayoutHasher, PayloadError, SavePhase, Snapshot, SnapshotMeta, StorageAgent, WindowId,
    payload,
};

const KILLS: usize = 50;
const BASE: u32 = 0x6553_f100;
/// Windows kept by the child's retention: it deletes older ones.
const RETAINED: u32 = 3;
/// A child that prints nothing for this long is hung.
const WATCHDOG: Duration = Duration::from_secs(60);

/// The state saved at window `seq`: a deterministic vector whose length
/// varies from a few bytes to a few hundred KiB, so kills land inside large
/// writes too.
#[derive(Debug, PartialEq)]
struct State(Vec<u64>);

impl State {
    fn at(seq: u32) -> State {
        let len = (splitmix64(u64::from(seq)) % 40_000) as usize;
        State(
            (0..len as u64)
                .map(|j| splitmix64((u64::from(seq) << 32) | j))
                .collect(),
        )
    }
}

impl Checkpoint for State {
    const TYPE_NAME: &'static str = "State";
    const FINGERPRINT: u64 = LayoutHasher::new().write_str("0").write_str("Vec<u64>").finish();

    fn encode_state<W: Write>(&self, out: &mut W) -> Result<(), PayloadError> {
        payload::encode(&self.0, out)
    }

    fn decode_state(input: &mut &[u8]) -> Result<Self, PayloadError> {
        payload::decode(input).map(State)
    }
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn phase_name(phase: SavePhase) -> &'static str {
    match phase {
        SavePhase::AfterWrite => "after-write",
        SavePhase::AfterFsync => "after-fsync",
        SavePhase::BeforeRename => "before-rename",
        SavePhase::AfterRename => "after-rename",
        SavePhase::AfterDirFsync => "after-dir-fsync",
        _ => "unknown",
    }
}

/// The child: save forever (until killed), optionally killing itself at the
/// `CKPT_CRASH_AFTER`-th save's `CKPT_CRASH_PHASE`.
#[test]
#[ignore = "child process of save_survives_sigkill_at_every_point"]
fn crash_child() {
    let Some(dir) = std::env::var_os("CKPT_CRASH_DIR") else {
        panic!("run by save_survives_sigkill_at_every_point only");
    };
    let crash_phase = std::env::var("CKPT_CRASH_PHASE").ok();
    let crash_after: u32 = std::env::var("CKPT_CRASH_AFTER")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let saves = std::sync::atomic::AtomicU32::new(0);
    let mut agent = FsStorageAgent::new(Path::new(&dir)).expect("agent");
    if let Some(crash_phase) = crash_phase {
        agent = agent.on_save_phase(move |_op, window, phase| {
            if phase == SavePhase::AfterWrite {
                saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if phase_name(phase) == crash_phase && saves.load(std::sync::atomic::Ordering::SeqCst) == crash_after {
                println!("crashing {} {crash_phase}", window.sequence());
                std::io::stdout().flush().expect("flush");
                // SAFETY: sending a signal to ourselves.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
            }
        });
    }
    let start = agent
        .windows("op")
        .expect("windows")
        .last()
        .map_or(0, |w| w.sequence() + 1);
    let mut buf = Vec::new();
    for seq in start..start + 100_000 {
        let window = WindowId::new(BASE, seq);
        Snapshot::encode_into(&State::at(seq), SnapshotMeta::new("op", window), &mut buf).expect("encode");
        agent.save("op", window, &buf).expect("save");
        if let Some(old) = seq.checked_sub(RETAINED) {
            agent.delete("op", WindowId::new(BASE, old)).expect("delete");
        }
        println!("saved {seq}");
    }
}

enum Line {
    Saved(u32),
    Crashing(u32, String),
}

/// Spawns the child and a thread forwarding its progress lines; the channel
/// closes when the child's stdout does (it exited).
fn spawn_child(dir: &Path, crash: Option<(&str, u32)>) -> (Child, mpsc::Receiver<Line>) {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CKPT_CRASH_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some((phase, after)) = crash {
        cmd.env("CKPT_CRASH_PHASE", phase)
            .env("CKPT_CRASH_AFTER", after.to_string());
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness prints `test crash_child ... ` before the child's first line.
            let line = line.rsplit_once("... ").map_or(line.as_str(), |(_, rest)| rest);
            let mut words = line.split_whitespace();
            let parsed = match (words.next(), words.next().and_then(|s| s.parse().ok()), words.next()) {
                (Some("saved"), Some(seq), None) => Line::Saved(seq),
                (Some("crashing"), Some(seq), Some(phase)) => Line::Crashing(seq, phase.to_owned()),
                _ => continue, // the test harness's own lines
            };
            if tx.send(parsed).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Receives the next line, killing the child and failing if it hangs.
fn next_line(child: &mut Child, rx: &mpsc::Receiver<Line>, seed: u64) -> Option<Line> {
    match rx.recv_timeout(WATCHDOG) {
        Ok(line) => Some(line),
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!("watchdog: child silent for {WATCHDOG:?} (seed {seed})");
        }
    }
}

/// Every listed window decodes to exactly its value; the newest reported
/// save is listed.
fn check_store(dir: &Path, last_saved: Option<u32>, context: &str) -> Vec<u32> {
    let agent = FsStorageAgent::new(dir).expect("agent");
    let listed: Vec<u32> = agent
        .windows("op")
        .expect("windows")
        .iter()
        .map(|w| w.sequence())
        .collect();
    for &seq in &listed {
        let window = WindowId::new(BASE, seq);
        let bytes = agent
            .load("op", window)
            .unwrap_or_else(|e| panic!("{context}: listed window {seq} does not load: {e}"));
        let (header, state) =
            Snapshot::decode::<State>(&bytes).unwrap_or_else(|e| panic!("{context}: window {seq} is corrupt: {e}"));
        assert_eq!(header.window, window, "{context}");
        assert!(state == State::at(seq), "{context}: window {seq} holds another value");
    }
    if let Some(last) = last_saved {
        assert!(
            listed.contains(&last),
            "{context}: reported save {last} missing from {listed:?}"
        );
    }
    listed
}

#[test]
fn save_survives_sigkill_at_every_point() {
    let seed = std::env::var("CKPT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash test seed {seed} (rerun with CKPT_CRASH_SEED={seed})");
    let mut rng = seed;
    let mut random = move |n: u64| {
        rng = splitmix64(rng);
        rng % n
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut last_saved = None;
    let mut crashed_phases = std::collections::BTreeSet::new();

    for kill in 0..KILLS {
        let chosen = kill % 2 == 0;
        let context = format!("kill {kill} (seed {seed})");
        if chosen {
            // Cycle through the phases so each is hit several times.
            let phase = phase_name(SavePhase::ALL[(kill / 2) % SavePhase::ALL.len()]);
            let after = 1 + random(4) as u32;
            let (mut child, rx) = spawn_child(dir.path(), Some((phase, after)));
            let mut crashed_at = None;
            while let Some(line) = next_line(&mut child, &rx, seed) {
                match line {
                    Line::Saved(seq) => last_saved = Some(seq),
                    Line::Crashing(seq, p) => crashed_at = Some((seq, p)),
                }
            }
            let status = child.wait().expect("wait");
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{context}: child ended with {status:?}"
            );
            let (seq, p) = crashed_at.unwrap_or_else(|| panic!("{context}: child died without reaching {phase}"));
            assert_eq!(p, phase, "{context}");
            crashed_phases.insert(p.clone());
            let listed = check_store(dir.path(), last_saved, &context);
            let temp = dir
                .path()
                .join("op")
                .join(format!(".{:016x}.tmp", WindowId::new(BASE, seq).as_u64()));
            match phase {
                "after-write" | "after-fsync" | "before-rename" => {
                    assert!(
                        !listed.contains(&seq),
                        "{context}: window {seq} listed before its rename"
                    );
                    assert!(temp.exists(), "{context}: no temp file at {phase}");
                }
                _ => {
                    assert!(
                        listed.contains(&seq),
                        "{context}: window {seq} missing after its rename"
                    );
                    assert!(!temp.exists(), "{context}: temp file left after the rename");
                    last_saved = Some(seq);
                }
            }
        } else {
            let lines = 1 + random(20);
            let (mut child, rx) = spawn_child(dir.path(), None);
            let mut seen = 0;
            while seen < lines {
                match next_line(&mut child, &rx, seed) {
                    Some(Line::Saved(seq)) => {
                        last_saved = Some(seq);
                        seen += 1;
                    }
                    Some(Line::Crashing(..)) => panic!("{context}: unexpected crash line"),
                    None => panic!("{context}: child exited on its own"),
                }
            }
            // Vary the instant of the kill within the next save.
            let spin = random(2_000_000);
            let mut x = 0u64;
            for i in 0..spin {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            child.kill().expect("kill");
            let status = child.wait().expect("wait");
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{context}: child ended with {status:?}"
            );
            // Lines printed between our last read and the kill count too.
            while let Some(line) = next_line(&mut child, &rx, seed) {
                if let Line::Saved(seq) = line {
                    last_saved = Some(seq);
                }
            }
            check_store(dir.path(), last_saved, &context);
        }
    }
    let all: std::collections::BTreeSet<String> = SavePhase::ALL.iter().map(|p| phase_name(*p).to_owned()).collect();
    assert_eq!(crashed_phases, all, "every crash point was hit");
    println!("{KILLS} kills survived; newest saved window {last_saved:?}");
}
