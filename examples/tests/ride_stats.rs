//! Runs the `ride-stats` binary as a user would, in the deterministic window
//! mode: its output against an independent computation, a live operator
//! failure, SIGKILLs and restarts, and its command-line errors.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use checkpoint_examples::rides::{RIDES_PER_CALL, Ride, ZONES, ride};
use checkpoint_runtime::io::{published_windows, read_output};

/// The window base the binary fixes in the deterministic mode.
const BASE: u64 = 1_700_000_000;

/// How long a killed-and-restarted run may go without printing a line.
const WATCHDOG: Duration = Duration::from_secs(60);

struct Job {
    _dir: tempfile::TempDir,
    checkpoints: PathBuf,
    output: PathBuf,
}

impl Job {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Job {
            checkpoints: dir.path().join("checkpoints"),
            output: dir.path().join("out"),
            _dir: dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ride-stats"));
        command
            .arg("--checkpoints")
            .arg(&self.checkpoints)
            .arg("--output")
            .arg(&self.output)
            .args(args);
        command
    }

    /// Runs to completion; panics unless it succeeds. Returns stdout.
    fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("run ride-stats");
        let text = describe(&output);
        assert!(output.status.success(), "ride-stats failed:\n{text}");
        String::from_utf8(output.stdout).expect("utf-8 stdout")
    }

    fn output_bytes(&self) -> Vec<u8> {
        read_output(&self.output).expect("read the output")
    }

    /// The published window files, by name, with their contents.
    fn output_files(&self) -> BTreeMap<String, Vec<u8>> {
        published_windows(&self.output)
            .expect("list the output")
            .into_iter()
            .map(|w| {
                let name = format!("{:016x}", w.as_u64());
                let bytes = std::fs::read(self.output.join(&name)).expect("read a window file");
                (name, bytes)
            })
            .collect()
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---------------------------------------------------------------------------
// The independent computation: plain loops over `ride(seed, i)`, with the
// window and application window boundaries worked out from the settings.

#[derive(Default, Clone, Copy)]
struct Sums {
    rides: u64,
    cents: u64,
    meters: u64,
}

impl Sums {
    fn add(&mut self, r: &Ride) {
        self.rides += 1;
        self.cents += u64::from(r.fare_cents);
        self.meters += u64::from(r.distance_m);
    }
}

fn dollars(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn avg(sum: u64, n: u64) -> u64 {
    sum.checked_div(n).unwrap_or(0)
}

fn avg_km(meters: u64, n: u64) -> String {
    let m = avg(meters, n);
    format!("{}.{:02}", m / 1000, (m % 1000) / 10)
}

/// The report `ride-stats` should publish for these settings.
fn expected_report(seed: u64, rides: u64, window_rides: u64, app_windows: u32, top: usize) -> String {
    // Rides are emitted RIDES_PER_CALL at a time and a window ends after the
    // call that reaches its size.
    let per_window = window_rides.div_ceil(RIDES_PER_CALL) * RIDES_PER_CALL;
    let windows = rides.div_ceil(per_window) as u32;
    // Application windows end at sequences s with (s + 1) % count == 0, and
    // at the last window; the first window is 1.
    let mut app: Vec<(u32, u32)> = Vec::new();
    let mut start = 1;
    for s in 1..=windows {
        if (s + 1) % app_windows == 0 || s == windows {
            app.push((start, s));
            start = s + 1;
        }
    }

    let mut report = String::new();
    let mut total = Sums::default();
    let mut zone_total: HashMap<u8, u64> = HashMap::new();
    for (first, last) in app {
        let from = u64::from(first - 1) * per_window;
        let to = (u64::from(last) * per_window).min(rides);
        let mut all = Sums::default();
        let mut pickups: HashMap<u8, Sums> = HashMap::new();
        let mut dropoffs: HashMap<u8, u64> = HashMap::new();
        let mut hours: BTreeMap<u32, Sums> = BTreeMap::new();
        for i in from..to {
            let r = ride(seed, i);
            all.add(&r);
            total.add(&r);
            pickups.entry(r.pickup_zone).or_default().add(&r);
            *dropoffs.entry(r.dropoff_zone).or_default() += 1;
            hours.entry(r.pickup_time / 3600).or_default().add(&r);
            *zone_total.entry(r.pickup_zone).or_default() += u64::from(r.fare_cents);
        }
        if all.rides == 0 {
            continue;
        }
        report += &format!(
            "window={first} summary rides={} revenue={} km={}.{} total-rides={} total-revenue={}\n",
            all.rides,
            dollars(all.cents),
            all.meters / 1000,
            (all.meters % 1000) / 100,
            total.rides,
            dollars(total.cents)
        );
        let name = |z: u8| ZONES[z as usize].name;
        let mut ranking: Vec<(u8, Sums)> = pickups.iter().map(|(z, s)| (*z, *s)).collect();
        ranking.sort_by(|a, b| b.1.cents.cmp(&a.1.cents).then(name(a.0).cmp(name(b.0))));
        for (rank, (zone, s)) in ranking.iter().take(top).enumerate() {
            report += &format!(
                "window={first} top={} zone={} revenue={} pickups={}\n",
                rank + 1,
                name(*zone),
                dollars(s.cents),
                s.rides
            );
        }
        let mut zones: Vec<u8> = pickups.keys().chain(dropoffs.keys()).copied().collect();
        zones.sort_by_key(|z| name(*z));
        zones.dedup();
        for zone in zones {
            let p = pickups.get(&zone).copied().unwrap_or_default();
            report += &format!(
                "window={first} zone={} pickups={} dropoffs={} revenue={} avg-fare={} avg-km={} total-revenue={}\n",
                name(zone),
                p.rides,
                dropoffs.get(&zone).copied().unwrap_or(0),
                dollars(p.cents),
                dollars(avg(p.cents, p.rides)),
                avg_km(p.meters, p.rides),
                dollars(zone_total[&zone]),
            );
        }
        for (hour, h) in hours {
            report += &format!(
                "window={first} hour=day{}-{:02}h rides={} revenue={} avg-fare={} avg-km={}\n",
                hour / 24 + 1,
                hour % 24,
                h.rides,
                dollars(h.cents),
                dollars(avg(h.cents, h.rides)),
                avg_km(h.meters, h.rides)
            );
        }
    }
    report
}

#[test]
fn output_matches_an_independent_computation() {
    let job = Job::new();
    // 650 rounds up to windows of 700 rides: 17 full windows and one of 445.
    let stdout = job.run(&[
        "--rides",
        "12345",
        "--seed",
        "7",
        "--deterministic",
        "650",
        "--app-windows",
        "3",
        "--checkpoint-every",
        "6",
        "--top",
        "4",
        "--rate",
        "0",
    ]);
    assert!(stdout.contains("finished: 12,345 rides"), "{stdout}");
    assert!(
        stdout.contains("committed:     window 18 (0x6553f10000000012)"),
        "{stdout}"
    );

    let expected = expected_report(7, 12_345, 650, 3, 4);
    let actual = String::from_utf8(job.output_bytes()).expect("utf-8 output");
    assert!(expected.lines().count() > 7 * 20, "a report worth checking");
    if actual != expected {
        let diff = actual
            .lines()
            .zip(expected.lines())
            .find(|(a, e)| a != e)
            .map(|(a, e)| format!("first difference:\n  got      {a}\n  expected {e}"))
            .unwrap_or_else(|| "one is a prefix of the other".to_owned());
        panic!(
            "output differs from the independent computation ({} vs {} lines); {diff}",
            actual.lines().count(),
            expected.lines().count()
        );
    }

    // One file per streaming window, named by its window id.
    let names: Vec<String> = job.output_files().into_keys().collect();
    let expected_names: Vec<String> = (1..=18u64).map(|s| format!("{:016x}", BASE << 32 | s)).collect();
    assert_eq!(names, expected_names);
    assert!(job.output.join("README.txt").exists());

    // Running it again does not run anything: the job is complete.
    let again = job.run(&[]);
    assert!(again.contains("already finished"), "{again}");
    assert_eq!(String::from_utf8(job.output_bytes()).expect("utf-8"), expected);
}

const SMALL: [&str; 12] = [
    "--rides",
    "9000",
    "--deterministic",
    "300",
    "--app-windows",
    "2",
    "--checkpoint-every",
    "4",
    "--rate",
    "0",
    "--seed",
    "11",
];

#[test]
fn a_failure_is_recovered_and_the_output_is_unchanged() {
    let clean = Job::new();
    clean.run(&SMALL);

    let failing = Job::new();
    let mut args = SMALL.to_vec();
    args.extend(["--fail-at-window", "10"]);
    let stdout = failing.run(&args);
    assert!(
        stdout.contains("! operator stats panicked: injected fault at window 0x6553f1000000000a"),
        "{stdout}"
    );
    assert!(
        stdout.contains("recovery:      stats failed at window 10 (0x6553f1000000000a)"),
        "{stdout}"
    );
    assert!(stdout.contains("restored stats from its checkpoint @"), "{stdout}");
    assert_eq!(failing.output_files(), clean.output_files());
    assert_eq!(
        String::from_utf8(failing.output_bytes()).expect("utf-8"),
        expected_report(11, 9_000, 300, 2, 3)
    );
}

/// A small deterministic generator for the test's random choices.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The same arguments without the rate limit (it changes no output): for the
/// uninterrupted reference runs.
fn unpaced<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut args = args.to_vec();
    if let Some(i) = args.iter().position(|a| *a == "--rate") {
        args[i + 1] = "0";
    }
    args
}

/// Spawns the job with stdout piped to a reader thread that forwards lines.
fn spawn(job: &Job, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = job
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ride-stats");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The committed sequence of a machine-readable progress line
/// `window <seq> committed <seq|-> ...`.
fn committed(line: &str) -> Option<Option<u32>> {
    let mut words = line.split_whitespace();
    if words.next() != Some("window") {
        return None;
    }
    words.next()?;
    if words.next() != Some("committed") {
        return None;
    }
    Some(words.next()?.parse().ok())
}

#[test]
fn killed_and_restarted_it_publishes_what_an_uninterrupted_run_does() {
    let seed = std::env::var("RIDE_STATS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("kill test seed: {seed} (RIDE_STATS_TEST_SEED={seed} reproduces the choices)");
    let mut rng = seed;
    let seed_arg = (seed % 1_000_000).to_string();
    // Paced so a run lasts about two seconds: time to be killed mid-way.
    let args = [
        "--rides",
        "40000",
        "--deterministic",
        "500",
        "--app-windows",
        "2",
        "--checkpoint-every",
        "2",
        "--rate",
        "20000",
        "--seed",
        &seed_arg,
    ];

    let killed = Job::new();
    let mut kills = 0;
    let mut last_committed = 0u32;
    let mut finished = false;
    for _ in 0..50 {
        let (mut child, lines) = spawn(&killed, &args);
        // Kill once the committed window has moved past the previous run's
        // (so every run makes progress) and a few more lines went by.
        let extra = splitmix(&mut rng) % 3;
        let mut seen_after_progress: Option<u64> = None;
        let mut transcript = Vec::new();
        loop {
            match lines.recv_timeout(WATCHDOG) {
                Ok(line) => {
                    if let Some(Some(c)) = committed(&line)
                        && c > last_committed
                    {
                        last_committed = c;
                        seen_after_progress.get_or_insert(0);
                    }
                    if let Some(n) = &mut seen_after_progress
                        && committed(&line).is_some()
                    {
                        *n += 1;
                    }
                    transcript.push(line);
                    if seen_after_progress.is_some_and(|n| n > extra) {
                        // SIGKILL; an error means it had just exited.
                        let _ = child.kill();
                        child.wait().expect("reap");
                        kills += 1;
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait");
                    assert!(
                        status.success(),
                        "ride-stats failed: {status}\n{}",
                        transcript.join("\n")
                    );
                    let text = transcript.join("\n");
                    assert!(text.contains("finished"), "{text}");
                    if kills > 0 {
                        // Killed after its last commit, the job has nothing left to do.
                        assert!(
                            text.contains("resuming the job") || text.contains("already finished"),
                            "{text}"
                        );
                    }
                    finished = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("no output for {WATCHDOG:?} (seed {seed}):\n{}", transcript.join("\n"));
                }
            }
        }
        if finished {
            break;
        }
    }
    assert!(finished, "did not finish after 50 runs (seed {seed})");
    assert!(
        kills >= 2,
        "only {kills} kills: the job finished too fast to test (seed {seed})"
    );
    println!("killed {kills} times");

    let uninterrupted = Job::new();
    uninterrupted.run(&unpaced(&args));
    let expected = uninterrupted.output_files();
    assert_eq!(expected.len(), 80, "40,000 rides in windows of 500");
    let actual = killed.output_files();
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "seed {seed}"
    );
    assert!(
        actual == expected,
        "the output differs after {kills} kills (seed {seed})"
    );
    assert_eq!(killed.output_bytes(), uninterrupted.output_bytes());
}

#[test]
fn help_and_bad_arguments() {
    let bin = env!("CARGO_BIN_EXE_ride-stats");
    let help = Command::new(bin).arg("--help").output().expect("run");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--rides",
        "--checkpoints",
        "--output",
        "--deterministic",
        "--fail-at-window",
        "Ctrl-C",
    ] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }

    let bad = Command::new(bin).args(["--rides", "many"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));

    let misaligned = Command::new(bin)
        .args(["--app-windows", "3", "--checkpoint-every", "4"])
        .output()
        .expect("run");
    assert_eq!(misaligned.status.code(), Some(2), "{}", describe(&misaligned));
    assert!(String::from_utf8_lossy(&misaligned.stderr).contains("not a multiple of --app-windows 3"));
}

#[test]
fn stale_output_without_checkpoints_is_refused() {
    let job = Job::new();
    std::fs::create_dir_all(&job.output).expect("mkdir");
    std::fs::write(job.output.join("6553f10000000001"), "old\n").expect("write");
    let output = job.command(&SMALL).output().expect("run");
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already holds output of an earlier job"), "{stderr}");
    assert!(!Path::new(&job.checkpoints).join("rides").exists());
}

/// Per key, the sums a report adds up to over all its windows: the last
/// running totals, and the rides and revenue per simulated hour.
fn totals(report: &str) -> BTreeMap<String, (u64, u64)> {
    let field = |line: &str, key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .map(|v| v.replace('.', "").parse().expect("a number"))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    let mut sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in report.lines() {
        let kind = line.split_whitespace().nth(1).expect("a record");
        if kind == "summary" {
            sums.insert(
                "total".to_owned(),
                (field(line, "total-rides="), field(line, "total-revenue=")),
            );
        } else if let Some(hour) = kind.strip_prefix("hour=") {
            let entry = sums.entry(hour.to_owned()).or_default();
            entry.0 += field(line, "rides=");
            entry.1 += field(line, "revenue=");
        } else if kind.starts_with("zone=") {
            sums.insert(kind.to_owned(), (0, field(line, "total-revenue=")));
        }
    }
    sums
}

#[test]
fn ctrl_c_stops_gracefully_and_the_resumed_job_ends_with_an_uninterrupted_runs_output() {
    let args = [
        "--rides",
        "30000",
        "--deterministic",
        "500",
        "--app-windows",
        "2",
        "--checkpoint-every",
        "2",
        "--rate",
        "15000",
    ];
    let job = Job::new();
    let (mut child, lines) = spawn(&job, &args);
    let mut transcript = Vec::new();
    let mut interrupted = false;
    loop {
        match lines.recv_timeout(WATCHDOG) {
            Ok(line) => {
                if !interrupted && committed(&line).flatten().is_some_and(|c| c >= 2) {
                    let pid = i32::try_from(child.id()).expect("a pid");
                    // SAFETY: sends a signal to our own child process.
                    let sent = unsafe { libc::kill(pid, libc::SIGINT) };
                    assert_eq!(sent, 0, "kill -INT {pid}");
                    interrupted = true;
                }
                transcript.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no output for {WATCHDOG:?}:\n{}", transcript.join("\n"));
            }
        }
    }
    let status = child.wait().expect("wait");
    let text = transcript.join("\n");
    assert!(status.success(), "{status}\n{text}");
    assert!(text.contains("Ctrl-C: stopping"), "{text}");
    assert!(text.contains("ride-stats: stopped at ride"), "{text}");
    assert!(text.contains("run the same command again to resume"), "{text}");
    let stopped_output = job.output_bytes();

    let resumed = job.run(&args);
    assert!(resumed.contains("resuming the job"), "{resumed}");
    assert!(resumed.contains("finished"), "{resumed}");
    let output = String::from_utf8(job.output_bytes()).expect("utf-8");
    assert!(
        output.as_bytes().starts_with(&stopped_output),
        "published windows never change"
    );

    // In the deterministic mode the stop waits for the end of a window where
    // every application window ends, so the resumed job cuts the same
    // windows: the output is an uninterrupted run's, byte for byte.
    let uninterrupted = Job::new();
    uninterrupted.run(&unpaced(&args));
    let expected = String::from_utf8(uninterrupted.output_bytes()).expect("utf-8");
    assert_eq!(totals(&output), totals(&expected));
    assert!(
        output == expected,
        "the resumed output differs from an uninterrupted run's"
    );
    assert_eq!(totals(&output)["total"].0, 30_000);
}

/// One plain HTTP GET on loopback; the body, or `None` while nothing
/// answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// The value of the Prometheus sample `name{labels}` (labels as printed,
/// `""` for none) in `text`.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn the_metrics_are_served_to_prometheus_while_the_job_runs() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let job = Job::new();
    let addr = format!("127.0.0.1:{port}");
    // Slow enough to be scraped while it runs (about 6 s).
    let mut child = job
        .command(&["--rides", "60000", "--rate", "10000", "--metrics", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ride-stats");
    let deadline = std::time::Instant::now() + WATCHDOG;
    let text = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: no committed window scraped in {WATCHDOG:?}"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ride-stats ended ({status}) before a scrape saw a commit");
        }
        match http_get(port, "/metrics") {
            Some(text) if sample(&text, "checkpoint_committed_window", "").is_some_and(|w| w >= 4.0) => break text,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let stats = "operator=\"stats\"";
    let records_in = sample(&text, "checkpoint_num_records_in", stats).expect("records in");
    assert!(records_in > 0.0 && records_in <= 60_000.0, "{records_in}\n{text}");
    let completed = sample(&text, "checkpoint_number_of_completed_checkpoints", stats).expect("checkpoints");
    assert!(completed >= 1.0, "{text}");
    let size = sample(&text, "checkpoint_last_checkpoint_size_bytes", stats).expect("size");
    assert!(size > 0.0 && size < 100e6, "{size}");
    let durable = sample(&text, "checkpoint_durable_latency_seconds_count", stats).expect("durable latency");
    assert!(durable >= 1.0, "{text}");
    let encode_sum = sample(&text, "checkpoint_encode_seconds_sum", stats).expect("encode time");
    assert!((0.0..10.0).contains(&encode_sum), "{encode_sum}");
    assert!(
        sample(&text, "checkpoint_num_restarts", stats).is_some_and(|r| r == 0.0),
        "{text}"
    );
    let lag = sample(&text, "checkpoint_committed_window_lag", "").expect("lag");
    assert!((0.0..1_000.0).contains(&lag), "{lag}");
}
