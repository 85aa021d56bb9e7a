//! A loopback TCP proxy in front of the S3 endpoint that faults chosen
//! requests on command: resets their connection, swallows them (no answer
//! ever), or delays them. A request is chosen by its method and a piece of
//! its path, as its request line shows them.
#![allow(dead_code, reason = "each test uses what it needs")]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What happens to a chosen request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// Its connection is reset (RST) once the request arrives.
    Reset,
    /// It is read and never answered; the connection stays open.
    Swallow,
    /// It is passed on after this long.
    Delay(Duration),
}

/// Which requests to fault: those with `method` (`"*"`: any) whose path
/// contains `path`, after the first `skip` of them, `count` of them.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) skip: u32,
    pub(crate) count: u32,
    pub(crate) fault: Fault,
}

#[derive(Default)]
struct State {
    rule: Option<Rule>,
}

/// The proxy: listening on a free loopback port until the process ends.
pub(crate) struct Proxy {
    port: u16,
    state: Arc<Mutex<State>>,
    faulted: Arc<AtomicU64>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub(crate) fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let faulted = Arc::new(AtomicU64::new(0));
        {
            let (state, faulted) = (Arc::clone(&state), Arc::clone(&faulted));
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let (state, faulted) = (Arc::clone(&state), Arc::clone(&faulted));
                    std::thread::spawn(move || serve(client, server, &state, &faulted));
                }
            });
        }
        Proxy { port, state, faulted }
    }

    /// The URL to give the client.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Faults what `rule` chooses from now on (replacing any rule).
    pub(crate) fn set(&self, rule: Rule) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).rule = Some(rule);
    }

    /// Faults nothing from now on (requests already swallowed stay so).
    pub(crate) fn clear(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).rule = None;
    }

    /// Requests faulted so far.
    pub(crate) fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::SeqCst)
    }
}

/// Whether the request that starts `chunk` is to be faulted, and how.
fn choose(chunk: &[u8], state: &Mutex<State>) -> Option<Fault> {
    let line = chunk.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split(' ');
    let (method, path) = (words.next()?, words.next()?);
    if !words.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return None;
    }
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let rule = state.rule.as_mut()?;
    if (rule.method != "*" && rule.method != method) || !path.contains(&rule.path) || rule.count == 0 {
        return None;
    }
    if rule.skip > 0 {
        rule.skip -= 1;
        return None;
    }
    rule.count -= 1;
    Some(rule.fault)
}

fn serve(mut client: TcpStream, mut server: TcpStream, state: &Mutex<State>, faulted: &AtomicU64) {
    let (Ok(mut client_w), Ok(mut server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    // Set before a reset: the answering side then closes its copy of the
    // client socket without an orderly end, so the last close resets.
    let resetting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering = {
        let resetting = Arc::clone(&resetting);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = server_r.read(&mut buf) {
                if client_w.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            if !resetting.load(Ordering::SeqCst) {
                let _ = client_w.shutdown(Shutdown::Write);
            }
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut swallowing = false;
    while let Ok(n @ 1..) = client.read(&mut buf) {
        if swallowing {
            continue;
        }
        match choose(&buf[..n], state) {
            None => {}
            Some(fault) => {
                faulted.fetch_add(1, Ordering::SeqCst);
                match fault {
                    Fault::Reset => {
                        resetting.store(true, Ordering::SeqCst);
                        set_reset_on_close(&client);
                        let _ = server.shutdown(Shutdown::Both);
                        let _ = answering.join();
                        return;
                    }
                    Fault::Swallow => {
                        swallowing = true;
                        continue;
                    }
                    Fault::Delay(d) => std::thread::sleep(d),
                }
            }
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(Shutdown::Write);
}

/// Makes the last close of `stream` a reset rather than an orderly end.
fn set_reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a properly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
