//! Loopback TCP proxies that observe or disturb traffic to a real server
//! (Consul, a node, moto): the server is never replaced — every request
//! answered with data is answered by it. Each listens on a reserved port.
//!
//! * [`CountingProxy`] counts requests in flight (and the peak), holding
//!   each answer back a little so concurrency is measurable.
//! * [`FaultProxy`] scripts what happens to each connection: a canned
//!   status, a black hole, a hang-up, a dropped answer after the server
//!   applied the request, or a clean relay.
//! * [`GateProxy`] holds back requests carrying a marker (a lock watch, a
//!   session renewal) until the test opens the gate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ports::{self, Port};

/// Counts requests in flight through it: a connection is busy from the
/// first request byte until the first response byte. Responses are held
/// back by `delay` so concurrent requests overlap measurably.
#[derive(Debug)]
pub struct CountingProxy {
    /// `127.0.0.1:<port>` to point clients at.
    pub address: String,
    _port: Port,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl CountingProxy {
    /// Relays to `upstream` (`host:port`), holding each answer back by
    /// `delay`.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn start(upstream: String, delay: Duration) -> Self {
        let (listener, port) = ports::listen_tokio();
        let address = port.addr();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (f, p, c) = (in_flight.clone(), peak.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let (f, p) = (f.clone(), p.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    relay_counting(client, server, f, p, delay).await;
                });
            }
        });
        Self {
            address,
            _port: port,
            in_flight,
            peak,
            connections,
        }
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Most requests in flight at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn relay_counting(
    client: TcpStream,
    server: TcpStream,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    delay: Duration,
) {
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (b1, f1, p1) = (busy.clone(), in_flight.clone(), peak.clone());
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !b1.swap(true, Ordering::SeqCst) {
                let now = f1.fetch_add(1, Ordering::SeqCst) + 1;
                p1.fetch_max(now, Ordering::SeqCst);
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if busy.load(Ordering::SeqCst) {
                tokio::time::sleep(delay).await;
                if busy.swap(false, Ordering::SeqCst) {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// What a [`FaultProxy`] does with a connection.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Read the request, answer with this status and body, close.
    Respond(u16, &'static str),
    /// Accept and never answer (the client must time out).
    BlackHole,
    /// Read the request and close without an answer.
    Hangup,
    /// Forward the request to the server, wait for its answer, then close
    /// without passing the answer on: the write happened, but the client
    /// never hears so.
    DropAnswer,
    /// Relay to the server untouched.
    Pass,
}

/// An HTTP proxy on loopback: the first connections get the scripted
/// faults, later ones get `then` (usually [`Fault::Pass`]).
#[derive(Debug)]
pub struct FaultProxy {
    /// `127.0.0.1:<port>` to point clients at.
    pub address: String,
    _port: Port,
    seen: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// `script[i]` applies to the i-th connection; after the script runs
    /// out, `then` applies.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn start(upstream: String, script: Vec<Fault>, then: Fault) -> Self {
        let (listener, port) = ports::listen_tokio();
        let address = port.addr();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let i = counter.fetch_add(1, Ordering::SeqCst);
                let fault = script.get(i).cloned().unwrap_or_else(|| then.clone());
                let upstream = upstream.clone();
                tokio::spawn(async move { serve_fault(client, upstream, fault).await });
            }
        });
        Self {
            address,
            _port: port,
            seen,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

/// Reads one HTTP request (head plus Content-Length body).
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                return Some(data);
            }
        }
    }
}

async fn serve_fault(mut client: TcpStream, upstream: String, fault: Fault) {
    match fault {
        Fault::Respond(status, body) => {
            if read_request(&mut client).await.is_none() {
                return;
            }
            let answer = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
        }
        Fault::BlackHole => {
            let _ = read_request(&mut client).await;
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        Fault::Hangup => {
            let _ = read_request(&mut client).await;
        }
        Fault::DropAnswer => {
            let Some(request) = read_request(&mut client).await else {
                return;
            };
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = server.write_all(&request).await;
            let mut buf = vec![0u8; 4096];
            let _ = server.read(&mut buf).await;
            // The server answered (and applied the write); the client hears
            // nothing.
        }
        Fault::Pass => {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
    }
}

/// A loopback proxy in front of a real server that holds back every
/// request containing one of its markers (in the request line or body)
/// until [`GateProxy::open`], and relays everything else at once: a node's
/// request "in flight" for as long as a test needs, or a node whose lock
/// watch and session renewals are stuck.
#[derive(Debug)]
pub struct GateProxy {
    /// `127.0.0.1:<port>` to point clients at.
    pub address: String,
    _port: Port,
    open: tokio::sync::watch::Sender<bool>,
    held: Arc<std::sync::Mutex<Vec<&'static str>>>,
}

impl GateProxy {
    /// Relays to `upstream`, holding requests that contain any of
    /// `markers`.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn start(upstream: String, markers: Vec<&'static str>) -> Self {
        let (listener, port) = ports::listen_tokio();
        let address = port.addr();
        let (open, gate) = tokio::sync::watch::channel(false);
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let held_in = held.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, markers) = (upstream.clone(), markers.clone());
                let (gate, held) = (gate.clone(), held_in.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    relay_gated(client, server, markers, gate, held).await;
                });
            }
        });
        Self {
            address,
            _port: port,
            open,
            held,
        }
    }

    /// How many requests with `marker` are held right now.
    pub fn held(&self, marker: &str) -> usize {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|m| **m == marker)
            .count()
    }

    /// Lets every held and later request through.
    pub fn open(&self) {
        let _ = self.open.send(true);
    }
}

async fn relay_gated(
    client: TcpStream,
    server: TcpStream,
    markers: Vec<&'static str>,
    mut gate: tokio::sync::watch::Receiver<bool>,
    held: Arc<std::sync::Mutex<Vec<&'static str>>>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        // The end of the previous read, so a marker split across two
        // reads is still seen.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut seen = tail.clone();
            seen.extend_from_slice(&buf[..n]);
            let hit = markers
                .iter()
                .find(|m| seen.windows(m.len()).any(|w| w == m.as_bytes()));
            if let Some(marker) = hit
                && !*gate.borrow()
            {
                held.lock().unwrap().push(marker);
                let _ = gate.wait_for(|open| *open).await;
                let mut list = held.lock().unwrap();
                if let Some(i) = list.iter().position(|m| m == marker) {
                    list.remove(i);
                }
            }
            tail = seen[seen.len().saturating_sub(64)..].to_vec();
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}
