//! The `file` audit device's writer: one thread per device owns the file
//! (or stdout) and performs every open and write; requests hand it a line
//! and wait for the result at most the device's write timeout.
//!
//! Why a thread and a timeout: a write to a full disk, a stuck NFS mount or
//! a pipe nobody reads can block forever, and in Vault that freezes every
//! request (hashicorp/vault#5361, #2083). Here the request waiting on such a
//! write gives up after the timeout and counts the device as failed, and
//! while the thread stays blocked longer than the timeout, later requests
//! fail at once instead of queueing behind it. A line whose write timed out
//! may still reach the file when the device unblocks.
//!
//! `reopen` closes and reopens the file (SIGHUP, for logrotate); a file
//! that cannot be opened is retried on the next write.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Lines waiting for the writer before new ones are refused outright.
const QUEUE: usize = 1024;

/// Where a device writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// The server's standard output.
    Stdout,
    /// Nowhere (Vault's `discard`): every write succeeds.
    Discard,
    /// A file, created with `mode` (unix permission bits; `None` leaves an
    /// existing file's mode alone).
    Path { path: PathBuf, mode: Option<u32> },
    /// A device whose stored settings are invalid: every write fails with
    /// this reason until it is disabled.
    Unusable(String),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Self::Stdout => "stdout".to_owned(),
            Self::Discard => "discard".to_owned(),
            Self::Path { path, .. } => path.display().to_string(),
            Self::Unusable(_) => "an unusable device".to_owned(),
        }
    }
}

enum Command {
    Open(oneshot::Sender<Result<(), String>>),
    Write(Vec<u8>, oneshot::Sender<Result<(), String>>),
    Reopen,
}

/// Milliseconds since a process-wide start, plus one (0 means idle).
fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// The async side of a device's writer thread.
#[derive(Debug)]
pub(crate) struct FileSink {
    tx: SyncSender<Command>,
    /// When the current operation started ([`now_ms`]), 0 when idle.
    busy_since: Arc<AtomicU64>,
    timeout: Duration,
    target: String,
}

impl FileSink {
    /// Starts the writer thread. Nothing is opened yet: call
    /// [`open`](Self::open) to check the target now, or let the first write
    /// open it.
    pub(crate) fn start(target: Target, timeout: Duration) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let busy_since = Arc::new(AtomicU64::new(0));
        let description = target.describe();
        let busy = busy_since.clone();
        std::thread::Builder::new()
            .name("audit-file".to_owned())
            .spawn(move || writer(&target, &rx, &busy))?;
        Ok(Self {
            tx,
            busy_since,
            timeout,
            target: description,
        })
    }

    /// What the device writes to, for messages.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Hands a command to the writer without waiting. Fails at once when
    /// the writer has been blocked longer than the timeout or its queue is
    /// full.
    fn submit(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Command,
    ) -> Pending<'_> {
        let since = self.busy_since.load(Ordering::Relaxed);
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        if since != 0 && now_ms().saturating_sub(since) > timeout_ms {
            return Pending::Failed(format!(
                "writing to {} has been blocked for more than {:?}",
                self.target, self.timeout
            ));
        }
        let (done, result) = oneshot::channel();
        match self.tx.try_send(make(done)) {
            Ok(()) => Pending::Waiting(self, result),
            Err(TrySendError::Full(_)) => Pending::Failed(format!(
                "{QUEUE} writes to {} are queued behind a blocked write",
                self.target
            )),
            Err(TrySendError::Disconnected(_)) => {
                Pending::Failed("the audit writer has stopped".to_owned())
            }
        }
    }

    /// Opens the target now (the enable-time sanity check).
    pub(crate) async fn open(&self) -> Result<(), String> {
        self.submit(Command::Open).wait().await
    }

    /// Starts writing one line (newline included by the caller); await the
    /// result with [`Pending::wait`]. Several devices' writes overlap.
    pub(crate) fn write(&self, line: Vec<u8>) -> Pending<'_> {
        self.submit(|done| Command::Write(line, done))
    }

    /// Closes and reopens the file before the next write (SIGHUP).
    pub(crate) fn reopen(&self) {
        let _ = self.tx.try_send(Command::Reopen);
    }
}

/// A write handed to the writer thread.
#[derive(Debug)]
pub(crate) enum Pending<'a> {
    Waiting(&'a FileSink, oneshot::Receiver<Result<(), String>>),
    Failed(String),
}

impl Pending<'_> {
    /// The outcome, or a timeout error after the device's write timeout.
    pub(crate) async fn wait(self) -> Result<(), String> {
        let (sink, result) = match self {
            Self::Failed(e) => return Err(e),
            Self::Waiting(sink, result) => (sink, result),
        };
        match tokio::time::timeout(sink.timeout, result).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err("the audit writer has stopped".to_owned()),
            Err(_) => Err(format!(
                "writing to {} did not complete within {:?}",
                sink.target, sink.timeout
            )),
        }
    }
}

fn open(target: &Target) -> Result<Option<File>, String> {
    let (path, mode) = match target {
        Target::Path { path, mode } => (path, mode),
        Target::Unusable(reason) => return Err(reason.clone()),
        Target::Stdout | Target::Discard => return Ok(None),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode.unwrap_or(0o600));
    }
    let file = options
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt as _;
        // An existing file keeps its mode on open; apply the configured one.
        if let Ok(meta) = file.metadata()
            && meta.is_file()
            && meta.permissions().mode() & 0o7777 != *mode
        {
            file.set_permissions(std::fs::Permissions::from_mode(*mode))
                .map_err(|e| format!("setting the mode of {}: {e}", path.display()))?;
        }
    }
    Ok(Some(file))
}

fn writer(target: &Target, rx: &Receiver<Command>, busy: &AtomicU64) {
    let mut file: Option<File> = None;
    while let Ok(command) = rx.recv() {
        busy.store(now_ms(), Ordering::Relaxed);
        match command {
            Command::Reopen => file = None,
            Command::Open(done) => {
                let outcome = match open(target) {
                    Ok(opened) => {
                        file = opened;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = done.send(outcome);
            }
            Command::Write(line, done) => {
                let outcome = write(target, &mut file, &line);
                if outcome.is_err() {
                    // Reopen on the next write: the file may have been
                    // replaced or its disk may have recovered.
                    file = None;
                }
                let _ = done.send(outcome);
            }
        }
        busy.store(0, Ordering::Relaxed);
    }
}

fn write(target: &Target, file: &mut Option<File>, line: &[u8]) -> Result<(), String> {
    match target {
        Target::Discard => Ok(()),
        Target::Unusable(reason) => Err(reason.clone()),
        Target::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(line)
                .and_then(|()| out.flush())
                .map_err(|e| format!("writing to stdout: {e}"))
        }
        Target::Path { path, .. } => {
            if file.is_none() {
                *file = open(target)?;
            }
            let Some(f) = file.as_mut() else {
                return Err(format!("{} is not open", path.display()));
            };
            f.write_all(line)
                .map_err(|e| format!("writing to {}: {e}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_reopens_and_reports_failures() {
        let dir = tempfile_dir();
        let path = dir.join("sub/audit.log");
        let sink = FileSink::start(
            Target::Path {
                path: path.clone(),
                mode: Some(0o600),
            },
            Duration::from_secs(5),
        )
        .unwrap();
        sink.open().await.unwrap();
        sink.write(b"one\n".to_vec()).wait().await.unwrap();
        // logrotate: move the file away, reopen, the next line starts a new file.
        std::fs::rename(&path, dir.join("sub/audit.log.1")).unwrap();
        sink.reopen();
        sink.write(b"two\n".to_vec()).wait().await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("sub/audit.log.1")).unwrap(),
            "one\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_full_disk_is_an_error() {
        let sink = FileSink::start(
            Target::Path {
                path: PathBuf::from("/dev/full"),
                mode: None,
            },
            Duration::from_secs(5),
        )
        .unwrap();
        let err = sink.write(b"x\n".to_vec()).wait().await.unwrap_err();
        assert!(err.contains("/dev/full"), "{err}");
    }

    #[tokio::test]
    async fn an_unopenable_path_is_an_error() {
        let sink = FileSink::start(
            Target::Path {
                path: PathBuf::from("/proc/no-such-dir/audit.log"),
                mode: None,
            },
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(sink.open().await.is_err());
        assert!(sink.write(b"x\n".to_vec()).wait().await.is_err());
    }

    #[tokio::test]
    async fn discard_always_succeeds() {
        let sink = FileSink::start(Target::Discard, Duration::from_secs(1)).unwrap();
        sink.open().await.unwrap();
        sink.write(b"x\n".to_vec()).wait().await.unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "strongroom-audit-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
