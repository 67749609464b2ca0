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
//!   (something outside the protocol may hold it).
//!
//! ```
//! let http = testkit::ports::reserve();
//! let listen = format!("127.0.0.1:{}", http.get());
//! # drop(listen);
//! ```

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
        if let Some(port) = lock_port(&dir, port) {
            return Ok(port);
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

/// Takes the lock for `port` if nobody holds it and the port is free.
fn lock_port(dir: &std::path::Path, port: u16) -> Option<Port> {
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
    let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
        && UdpSocket::bind(("127.0.0.1", port)).is_ok();
    free.then_some(Port { port, _lock: file })
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
}
