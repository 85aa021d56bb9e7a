//! An S3 endpoint for the tests: `CHECKPOINT_S3_ENDPOINT` if set (any
//! S3-compatible server; with `CHECKPOINT_S3_BUCKET` naming a bucket that
//! exists, if the server does not create buckets from a plain request),
//! else a `moto` server this test process starts on a free loopback port
//! and the kernel stops when the process ends.
#![allow(dead_code, reason = "each test binary uses what it needs")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use checkpoint_object_store::ObjectStoreAgent;

static ENDPOINT: OnceLock<Result<String, String>> = OnceLock::new();

/// The endpoint's URL (`http://127.0.0.1:PORT`); panics with what to do if
/// there is none and none can be started.
pub(crate) fn endpoint() -> String {
    ENDPOINT
        .get_or_init(|| match std::env::var("CHECKPOINT_S3_ENDPOINT") {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => start_moto(),
        })
        .clone()
        .unwrap_or_else(|e| {
            panic!(
                "these tests need an S3 endpoint: {e}. Set CHECKPOINT_S3_ENDPOINT to one, or install moto \
                 (`pip install 'moto[server]==5.2.1'`) so the tests start their own"
            )
        })
}

fn start_moto() -> Result<String, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let (tx, rx) = std::sync::mpsc::channel();
    // The server dies with the thread that started it (PR_SET_PDEATHSIG):
    // a thread that lives as long as the process. `python3` may be a
    // wrapper script, but one that execs: the interpreter keeps its pid.
    std::thread::Builder::new()
        .name("moto".to_owned())
        .spawn(move || {
            let mut command = Command::new("python3");
            command
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe; nothing else runs between
            // fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match command.spawn() {
                Ok(_child) => {
                    let _ = tx.send(Ok(()));
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("starting `python3 -m moto.server`: {e}")));
                }
            }
        })
        .map_err(|e| format!("starting a thread: {e}"))?;
    rx.recv().map_err(|e| e.to_string())??;
    // Ready when it accepts a connection and answers HTTP.
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("http://127.0.0.1:{port}");
    while Instant::now() < deadline {
        if http(&url, "GET", "/").is_ok() {
            return Ok(url);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "`python3 -m moto.server` did not answer on port {port} within 60 s (is moto installed?)"
    ))
}

/// One plain HTTP request; the response's status code.
pub(crate) fn http(url: &str, method: &str, path: &str) -> std::io::Result<u16> {
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))
}

/// A fresh bucket on the endpoint, named uniquely for this process.
pub(crate) fn bucket() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("ckpt-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let status = http(&endpoint(), "PUT", &format!("/{name}")).expect("creating a bucket");
    assert_eq!(status, 200, "creating bucket {name}");
    name
}

/// An agent on a fresh bucket of the endpoint, under `prefix`; or, if
/// `CHECKPOINT_S3_BUCKET` names an existing bucket (a server that does not
/// create buckets from an unsigned request, such as `s3s-fs`, or a real
/// S3 account), under a fresh prefix in it.
pub(crate) fn agent(prefix: &str) -> ObjectStoreAgent {
    agent_at(&location(prefix))
}

/// A fresh `s3://bucket/prefix` URL on the endpoint (see [`agent`]).
pub(crate) fn location(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    match std::env::var("CHECKPOINT_S3_BUCKET") {
        Ok(bucket) if !bucket.is_empty() => format!(
            "s3://{bucket}/run-{}-{}-{}/{prefix}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
        _ => format!("s3://{}/{prefix}", bucket()),
    }
}

/// The settings that reach the endpoint, as `from_url_with` takes them.
pub(crate) fn settings() -> Vec<(&'static str, String)> {
    vec![
        ("aws_endpoint", endpoint()),
        ("aws_allow_http", "true".to_owned()),
        ("aws_region", "us-east-1".to_owned()),
        ("aws_access_key_id", "test".to_owned()),
        ("aws_secret_access_key", "test".to_owned()),
    ]
}

/// An agent on `url` (an `s3://` URL on the endpoint).
pub(crate) fn agent_at(url: &str) -> ObjectStoreAgent {
    let settings = settings();
    ObjectStoreAgent::from_url_with(url, settings.iter().map(|(k, v)| (*k, v.as_str()))).expect("agent")
}

/// The endpoint's settings in the environment a user sets for a binary
/// (`AWS_ENDPOINT_URL` and the rest).
pub(crate) fn s3_env(command: &mut Command) -> &mut Command {
    command
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
}
