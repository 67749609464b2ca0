//! Loopback ports that cannot collide.
//!
//! "Bind port 0, close, hand out the number" races: between the close and
//! the child's bind, any process may take the port — another test binary,
//! or an *outbound* connection, which the kernel gives a port from the
//! ephemeral range (this is how a Consul agent died with `bind: address
//! already in use` on a Serf port). Here a port is:
//!
//! * chosen **outside** the kernel's ephemeral range
//!   (`/proc/sys/net/ipv4/ip_local_port_range`), so no outbound connection
//!   ever takes it;
//! * **reserved across processes** by an exclusive `flock` on
//!   `<tmp>/strongroom-ports/<port>.lock`, held by the [`Port`] value until
//!   it drops (for the life of the test), so parallel test binaries, other
//!   suites and the Python end-to-end fixtures (same lock files) never hand
//!   out the same number; a crashed holder's lock goes with its process;
//! * checked free for TCP and UDP on 127.0.0.1 before it is handed out
//!   (something outside the protocol may hold it). A listener in the test
//!   process itself takes the port with [`listen`]: the socket that checked
//!   it is the one it gets, so no gap is left for anything to take it.
//!   When a port is taken all the same, [`holders`] names the taker.
//!
//! ```
//! let http = testkit::ports::reserve();
//! let listen = format!("127.0.0.1:{}", http.get());
//! # drop(listen);
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::net::{TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port ever handed out: below it live well-known services and the
/// default ports of Consul (8300-8600), Vault (8200) and friends.
const FLOOR: u16 = 10_000;

/// A reserved loopback port: free when it was handed out, and reserved
/// (lock file held) until this value drops. Keep it alive as long as
/// anything may listen on it, restarts included.
#[derive(Debug)]
pub struct Port {
    port: u16,
    _lock: File,
}

impl Port {
    /// The port number.
    pub fn get(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.port)
    }
}

/// The directory holding one lock file per reserved port; shared by every
/// process on the machine (`STRONGROOM_PORT_DIR` overrides it).
pub fn lock_dir() -> PathBuf {
    std::env::var_os("STRONGROOM_PORT_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("strongroom-ports"))
}

/// The kernel's ephemeral range (`ip_local_port_range`), or Linux's
/// default when it cannot be read.
pub fn ephemeral_range() -> RangeInclusive<u16> {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|n| n.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if lo <= hi => lo..=hi,
        _ => 32_768..=60_999,
    }
}

/// The ports this harness may hand out: `[FLOOR, 65535]` minus the
/// ephemeral range, as (start, end) pieces.
fn candidate_ranges() -> Vec<RangeInclusive<u16>> {
    let eph = ephemeral_range();
    let mut out = Vec::new();
    if *eph.start() > FLOOR {
        out.push(FLOOR..=eph.start() - 1);
    }
    if *eph.end() < u16::MAX {
        out.push(eph.end().saturating_add(1).max(FLOOR)..=u16::MAX);
    }
    out
}

/// Reserves one port (see the [module docs](self)).
///
/// # Panics
/// When the lock directory cannot be created or no port is free outside
/// the ephemeral range (the message says which range was searched).
pub fn reserve() -> Port {
    try_reserve().unwrap_or_else(|e| panic!("testkit: {e}"))
}

/// Reserves `n` distinct ports.
///
/// # Panics
/// As [`reserve`].
pub fn reserve_n(n: usize) -> Vec<Port> {
    (0..n).map(|_| reserve()).collect()
}

/// [`reserve`] without the panic.
///
/// # Errors
/// The lock directory cannot be created, or every candidate is taken.
pub fn try_reserve() -> Result<Port, String> {
    try_reserve_listening().map(|(_checked, port)| port)
}

/// Reserves a port and listens on it (TCP, `127.0.0.1`), for a listener in
/// the test process itself (a relay, a proxy, a fake API). The socket that
/// found the port free is the one returned, so nothing can take the port
/// between the check and the listen, as it can for a port handed to a
/// child process.
///
/// # Panics
/// As [`reserve`].
pub fn listen() -> (TcpListener, Port) {
    try_reserve_listening().unwrap_or_else(|e| panic!("testkit: {e}"))
}

/// [`listen`] for a tokio server; call it inside a runtime.
///
/// # Panics
/// As [`reserve`], or outside a tokio runtime.
pub fn listen_tokio() -> (tokio::net::TcpListener, Port) {
    let (listener, port) = listen();
    listener
        .set_nonblocking(true)
        .expect("testkit: set_nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener)
        .expect("testkit: a tokio listener (inside a runtime)");
    (listener, port)
}

fn try_reserve_listening() -> Result<(TcpListener, Port), String> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let ranges = candidate_ranges();
    let total: u32 = ranges
        .iter()
        .map(|r| u32::from(*r.end()) - u32::from(*r.start()) + 1)
        .sum();
    if total == 0 {
        return Err(format!(
            "no loopback ports outside the ephemeral range {:?}",
            ephemeral_range()
        ));
    }
    // Start each process somewhere else and walk on from the last hand-out,
    // so concurrent processes rarely even contend for the same lock file.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = std::process::id().wrapping_mul(2_654_435_761) % total;
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..total {
        let i = NEXT.fetch_add(1, Ordering::SeqCst) % total;
        let port = nth_candidate(&ranges, i);
        if let Some(reserved) = lock_port(&dir, port) {
            return Ok(reserved);
        }
    }
    Err(format!(
        "every loopback port in {ranges:?} is reserved or in use (lock files in {})",
        dir.display()
    ))
}

fn nth_candidate(ranges: &[RangeInclusive<u16>], mut i: u32) -> u16 {
    for r in ranges {
        let len = u32::from(*r.end()) - u32::from(*r.start()) + 1;
        if i < len {
            return u16::try_from(u32::from(*r.start()) + i).unwrap_or(*r.start());
        }
        i -= len;
    }
    *ranges[0].start()
}

/// Takes the lock for `port` if nobody holds it and the port is free,
/// with the listener that checked it.
fn lock_port(dir: &std::path::Path, port: u16) -> Option<(TcpListener, Port)> {
    let path = dir.join(format!("{port}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ok()?;
    // Exclusive and non-blocking: a lock held by any process (or by another
    // Port in this one: locks belong to open file descriptions) means taken.
    file.try_lock().ok()?;
    // Reserved for us now; also make sure nothing outside the protocol
    // listens there (Serf needs both TCP and UDP).
    let listener = TcpListener::bind(("127.0.0.1", port)).ok()?;
    UdpSocket::bind(("127.0.0.1", port)).ok()?;
    Some((listener, Port { port, _lock: file }))
}

/// Who holds `port` on this machine, one line per socket: protocol, state
/// and the process (pid and command line) owning it, read from
/// `/proc/net/{tcp,tcp6,udp,udp6}` and `/proc/<pid>/fd`. Empty when
/// nothing does (or `/proc` cannot tell). For failure messages: a port
/// taken despite its reservation names its taker.
pub fn holders(port: u16) -> Vec<String> {
    let sockets: Vec<(String, String, u64)> = ["tcp", "tcp6", "udp", "udp6"]
        .into_iter()
        .flat_map(|proto| {
            let table = std::fs::read_to_string(format!("/proc/net/{proto}")).unwrap_or_default();
            table
                .lines()
                .skip(1)
                .filter_map(|line| socket_on(line, port))
                .map(|(state, inode)| (proto.to_owned(), state, inode))
                .collect::<Vec<_>>()
        })
        .collect();
    if sockets.is_empty() {
        return Vec::new();
    }
    let owners = socket_owners(sockets.iter().map(|(_, _, inode)| *inode).collect());
    sockets
        .into_iter()
        .map(|(proto, state, inode)| {
            let owner = owners
                .get(&inode)
                .map_or_else(|| "no process (kernel-held)".to_owned(), Clone::clone);
            format!("{proto} :{port} {state} held by {owner}")
        })
        .collect()
}

/// `(state, inode)` of one `/proc/net/*` row whose local port is `port`.
fn socket_on(line: &str, port: u16) -> Option<(String, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local_port = fields.get(1)?.rsplit_once(':')?.1;
    if u16::from_str_radix(local_port, 16).ok()? != port {
        return None;
    }
    let state = match *fields.get(3)? {
        "01" => "ESTABLISHED",
        "02" => "SYN_SENT",
        "03" => "SYN_RECV",
        "04" => "FIN_WAIT1",
        "05" => "FIN_WAIT2",
        "06" => "TIME_WAIT",
        "07" => "CLOSE",
        "08" => "CLOSE_WAIT",
        "09" => "LAST_ACK",
        "0A" => "LISTEN",
        "0B" => "CLOSING",
        other => other,
    };
    Some((state.to_owned(), fields.get(9)?.parse().ok()?))
}

/// Which process (pid and command line) has each socket inode open.
fn socket_owners(inodes: HashSet<u64>) -> HashMap<u64, String> {
    let mut owners = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return owners;
    };
    for pid in procs
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
    {
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(inode) = inode.filter(|i| inodes.contains(i)) {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                owners.insert(inode, format!("pid {pid} ({})", cmdline.trim()));
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_distinct() {
        let eph = ephemeral_range();
        let ports = reserve_n(50);
        let mut seen = std::collections::HashSet::new();
        for p in &ports {
            assert!(!eph.contains(&p.get()), "{} is ephemeral", p.get());
            assert!(p.get() >= FLOOR);
            assert!(seen.insert(p.get()), "{} handed out twice", p.get());
        }
    }

    #[test]
    fn a_reserved_port_is_locked_until_dropped() {
        let port = reserve();
        let dir = lock_dir();
        assert!(lock_port(&dir, port.get()).is_none(), "still reserved");
        let n = port.get();
        drop(port);
        assert!(lock_port(&dir, n).is_some(), "free again after drop");
    }

    #[test]
    fn listen_hands_over_the_socket_that_checked_the_port() {
        let (listener, port) = listen();
        assert_eq!(listener.local_addr().unwrap().port(), port.get());
        let dir = lock_dir();
        assert!(lock_port(&dir, port.get()).is_none(), "reserved");
        drop(port);
        assert!(
            lock_port(&dir, listener.local_addr().unwrap().port()).is_none(),
            "still listening"
        );
        std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    }

    #[test]
    fn holders_names_the_listening_process() {
        let port = reserve();
        assert_eq!(
            holders(port.get()),
            Vec::<String>::new(),
            "free when reserved"
        );
        let _listener = TcpListener::bind(("127.0.0.1", port.get())).unwrap();
        let held = holders(port.get());
        let me = format!("pid {} (", std::process::id());
        assert!(
            held.iter()
                .any(|h| h.starts_with(&format!("tcp :{} LISTEN held by {me}", port.get()))),
            "{held:?}"
        );
    }

    #[test]
    fn proc_net_rows_are_parsed_and_bad_rows_ignored() {
        let row = "   3: 0100007F:7586 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(socket_on(row, 0x7586), Some(("LISTEN".to_owned(), 123_456)));
        assert_eq!(socket_on(row, 0x7587), None);
        for bad in [
            "",
            "garbage",
            "  3: 0100007F:zz 0 0A",
            "  3: 0100007F:7586 0 0A x y z w v notanumber",
        ] {
            assert_eq!(socket_on(bad, 0x7586), None, "{bad:?}");
        }
    }
}
