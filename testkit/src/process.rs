//! Child processes that never outlive their test.
//!
//! [`Process`] runs a program in its own process group with stdout and
//! stderr appended to a log file, and pairs it with a tiny `sh` watchdog
//! whose stdin is a pipe from the test process: however the test process
//! ends (panic, `kill -9`, Ctrl-C), the pipe closes and the watchdog
//! SIGKILLs the group. Dropping the [`Process`] kills it too, and when the
//! drop happens while the test panics, the log's tail is printed first.
//!
//! Faults: [`Process::kill9`], [`Process::terminate`] (SIGTERM, then
//! SIGKILL after a grace period), [`Process::pause`] / [`Process::resume`]
//! (SIGSTOP / SIGCONT), [`Process::restart`]. Every start and signal goes on
//! the [`Timeline`].
//!
//! A process that dies at start with "address already in use" is started
//! again on fresh ports by [`with_fresh_ports`], which logs a line saying so.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::timeline::Timeline;
use crate::wait;

/// Lines of log printed when a test fails.
const TAIL_LINES: usize = 40;

/// The watchdog: ignores the usual termination signals (so Ctrl-C on the
/// test cannot take it out before the child), waits for EOF on stdin and
/// then SIGKILLs the child's process group.
const WATCHDOG: &str = r#"trap '' INT TERM HUP
while read -r _; do :; done
kill -KILL -- "-$1" 2>/dev/null
kill -KILL "$1" 2>/dev/null
"#;

/// What to run: program, arguments, environment, log file.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
    log: PathBuf,
}

impl ProcessSpec {
    /// Runs `program`; `name` labels it in timelines and failure output;
    /// the log goes to `log` (appended across restarts).
    pub fn new(name: &str, program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            log: log.into(),
        }
    }

    /// Adds one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child.
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable for the child.
    #[must_use]
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Runs the child in `dir`.
    #[must_use]
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

#[derive(Debug)]
struct Running {
    child: Child,
    watchdog: Child,
    /// Held open: closing it (or our death) fires the watchdog.
    control: Option<ChildStdin>,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Disarms the watchdog (before the child is reaped, so its pid or
    /// group id can never be reused under it), then kills and reaps the
    /// child.
    fn kill_and_reap(mut self) -> Option<ExitStatus> {
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        self.control.take();
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        send_signal(self.pid(), "KILL");
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

/// A child process under a watchdog (see the [module docs](self)).
#[derive(Debug)]
pub struct Process {
    spec: ProcessSpec,
    timeline: Timeline,
    running: Mutex<Option<Running>>,
    /// Where the current run's output begins in the log file.
    log_offset: Mutex<u64>,
    last_exit: Mutex<Option<ExitStatus>>,
}

impl Process {
    /// Starts `spec` (does not wait for readiness).
    ///
    /// # Panics
    /// When the program cannot be run or the log file cannot be written.
    pub fn start(spec: ProcessSpec, timeline: &Timeline) -> Self {
        let process = Self {
            spec,
            timeline: timeline.clone(),
            running: Mutex::new(None),
            log_offset: Mutex::new(0),
            last_exit: Mutex::new(None),
        };
        process.spawn();
        process
    }

    fn slot(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self) {
        let mut slot = self.slot();
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .unwrap_or_else(|e| panic!("testkit: open log {}: {e}", self.spec.log.display()));
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = writeln!(log, "==== testkit: starting {} ====", self.spec.name);
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("testkit: clone log handle: {e}"));
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        for (k, v) in &self.spec.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(dir) = &self.spec.dir {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "testkit: cannot run {} ({}): {e}",
                self.spec.program.display(),
                self.spec.name
            )
        });
        let pid = child.id();
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("testkit-watchdog")
            .arg(pid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("testkit: cannot start the watchdog (sh): {e}"));
        let control = watchdog.stdin.take();
        *self
            .log_offset
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = offset;
        *self
            .last_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        *slot = Some(Running {
            child,
            watchdog,
            control,
        });
        self.timeline
            .record(&self.spec.name, format!("started (pid {pid})"));
    }

    /// The label given in the spec.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The timeline this process records on.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The pid of the current run, if running.
    pub fn pid(&self) -> Option<u32> {
        self.slot().as_ref().map(Running::pid)
    }

    /// Whether the current run has exited (and with what); reaps it.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut slot = self.slot();
        if let Some(running) = slot.as_mut() {
            if let Ok(Some(status)) = running.child.try_wait() {
                if let Some(r) = slot.take() {
                    r.kill_and_reap();
                }
                self.timeline
                    .record(&self.spec.name, format!("exited ({status})"));
                *self
                    .last_exit
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(status);
                return Some(status);
            }
            return None;
        }
        *self
            .last_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the process runs (a SIGSTOPped process still runs).
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none() && self.slot().is_some()
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`, `"TERM"`, `"HUP"`…) to the
    /// process group; no-op when not running.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            self.timeline
                .record(&self.spec.name, format!("SIG{signal}"));
            send_signal(pid, signal);
        }
    }

    /// SIGKILL: a crash, nothing flushed. Waits until it is gone.
    pub fn kill9(&self) {
        if let Some(running) = self.slot().take() {
            self.timeline.record(&self.spec.name, "SIGKILL");
            let status = running.kill_and_reap();
            *self
                .last_exit
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = status;
        }
    }

    /// SIGTERM, then waits up to `grace` for the exit (SIGKILL after that).
    /// Returns the exit status, `None` when it had to be killed or was not
    /// running.
    pub fn terminate(&self, grace: Duration) -> Option<ExitStatus> {
        self.pid()?;
        self.signal("TERM");
        // A stopped process cannot act on SIGTERM.
        self.signal("CONT");
        match wait::try_until_blocking(
            &format!("{} exits after SIGTERM", self.spec.name),
            grace,
            || self.exit_status(),
        ) {
            Ok(status) => Some(status),
            Err(e) => {
                self.timeline.record(&self.spec.name, e);
                self.kill9();
                None
            }
        }
    }

    /// SIGSTOP: frozen, its sockets stay open but nothing is answered.
    /// Returns once every thread has stopped: the kernel stops a process's
    /// threads one by one, and on a loaded machine a thread that was
    /// already running can still answer a request sent after `kill`
    /// returned (the flake check caught a "frozen" active node answering
    /// its health check).
    ///
    /// # Panics
    /// When a thread is still running 10 s after the signal.
    pub fn pause(&self) {
        self.signal("STOP");
        if let Some(pid) = self.pid() {
            wait::until_blocking(
                &format!("every thread of {} stopped", self.spec.name),
                Duration::from_secs(10),
                || threads_stopped(pid),
            );
        }
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Starts the same spec again if it is not running (after a kill or
    /// exit); does not wait for readiness.
    pub fn start_again(&self) {
        if !self.is_running() {
            self.spawn();
        }
    }

    /// SIGTERM (grace 30 s), then start again.
    pub fn restart(&self) {
        self.terminate(Duration::from_secs(30));
        self.spawn();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        wait::try_until_blocking("exit", timeout, || self.exit_status()).ok()
    }

    /// The log path.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// The whole log (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// The current (or last) run's output only.
    pub fn log_since_start(&self) -> String {
        let offset = *self
            .log_offset
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut text = Vec::new();
        if let Ok(mut f) = File::open(&self.spec.log)
            && f.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        tail_of(&self.log(), lines)
    }

    /// Whether this run died at start because a port was taken.
    pub fn address_in_use(&self) -> bool {
        is_address_in_use(&self.log_since_start())
    }

    /// The tail formatted for a failure message.
    pub fn failure_report(&self) -> String {
        format!(
            "----- last {TAIL_LINES} log lines of {} ({}) -----\n{}\n----- end of {} -----",
            self.spec.name,
            self.spec.log.display(),
            self.tail(TAIL_LINES),
            self.spec.name
        )
    }

    /// Waits until this just-started process serves (`ready` holds), as a
    /// start attempt: an exit first is [`StartError::AddressInUse`] when
    /// its log says a port was taken (for [`with_fresh_ports`]), any other
    /// failure [`StartError::Other`] with its log tail; a process that does
    /// not serve by `timeout` is killed.
    ///
    /// # Errors
    /// As above; `what` names the condition in the message.
    pub async fn until_serving<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: F,
    ) -> Result<(), StartError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let waited = wait::try_until(what, timeout, || {
            let ready = ready();
            async move {
                match self.exit_status() {
                    Some(status) => Some(Some(status)),
                    None => ready.await.then_some(None),
                }
            }
        })
        .await;
        self.start_outcome(what, waited)
    }

    /// [`until_serving`](Self::until_serving) for a blocking `ready`.
    ///
    /// # Errors
    /// As `until_serving`.
    pub fn until_serving_blocking(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), StartError> {
        let waited = wait::try_until_blocking(what, timeout, || match self.exit_status() {
            Some(status) => Some(Some(status)),
            None => ready().then_some(None),
        });
        self.start_outcome(what, waited)
    }

    /// `waited`: `Ok(None)` served, `Ok(Some(status))` exited first, `Err`
    /// the wait gave up.
    fn start_outcome(
        &self,
        what: &str,
        waited: Result<Option<ExitStatus>, String>,
    ) -> Result<(), StartError> {
        match waited {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                let report = format!(
                    "{} exited ({status}) before it served ({what})\n{}",
                    self.spec.name,
                    self.failure_report()
                );
                if self.address_in_use() {
                    Err(StartError::AddressInUse(report))
                } else {
                    Err(StartError::Other(report))
                }
            }
            Err(message) => {
                let report = format!("{message}\n{}", self.failure_report());
                self.kill9();
                Err(StartError::Other(report))
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.failure_report());
        }
        if let Some(running) = self.slot().take() {
            running.kill_and_reap();
        }
    }
}

/// Whether no thread of process `pid` runs: each is stopped, traced, a
/// zombie or gone (`/proc/<pid>/task/*/stat`; the state follows the
/// command name's closing parenthesis).
fn threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            matches!(state, None | Some('T' | 't' | 'Z' | 'X'))
        })
    })
}

/// The last `lines` lines of `text`.
pub fn tail_of(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a log says a listener could not bind because its port was taken
/// (Go: `bind: address already in use`; Rust: `Address already in use`;
/// Python: `[Errno 98] Address already in use`).
pub fn is_address_in_use(log: &str) -> bool {
    log.to_ascii_lowercase().contains("address already in use")
}

/// Sends `signal` to the process group `pid` leads (every child here leads
/// its own group), falling back to the pid alone. Uses `kill(1)`: no
/// `unsafe` in the harness.
pub fn send_signal(pid: u32, signal: &str) {
    let group = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !group.is_ok_and(|s| s.success()) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Why a start attempt failed.
#[derive(Debug)]
pub enum StartError {
    /// The process exited at start because a port was taken: worth another
    /// try on fresh ports.
    AddressInUse(String),
    /// Anything else (the message includes the log tail).
    Other(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AddressInUse(m) | Self::Other(m) => f.write_str(m),
        }
    }
}

/// How many times a start is tried on fresh ports.
const FRESH_PORT_ATTEMPTS: usize = 3;

fn note_fresh_ports(what: &str, timeline: &Timeline, attempt: usize, detail: &str) {
    let line = format!(
        "testkit: {what} exited at start with \"address already in use\"; restarting it on fresh ports (attempt {} of {FRESH_PORT_ATTEMPTS}): {}",
        attempt + 1,
        tail_of(detail, 3).replace('\n', " | ")
    );
    eprintln!("{line}");
    timeline.record(what, line);
}

/// Runs `attempt` (which reserves its own fresh ports each time) until it
/// succeeds; an "address already in use" failure is logged and retried on
/// fresh ports, anything else panics.
///
/// # Panics
/// On any other failure, or when every attempt hit a taken port.
pub fn with_fresh_ports<T>(
    what: &str,
    timeline: &Timeline,
    mut attempt: impl FnMut() -> Result<T, StartError>,
) -> T {
    let mut last = String::new();
    for i in 0..FRESH_PORT_ATTEMPTS {
        if let Some(v) = after_attempt(what, timeline, i, attempt(), &mut last) {
            return v;
        }
    }
    panic!("testkit: {what} kept finding its ports taken: {last}");
}

/// [`with_fresh_ports`] for async starts.
///
/// # Panics
/// As [`with_fresh_ports`].
pub async fn with_fresh_ports_async<T, F, Fut>(what: &str, timeline: &Timeline, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StartError>>,
{
    let mut last = String::new();
    for i in 0..FRESH_PORT_ATTEMPTS {
        if let Some(v) = after_attempt(what, timeline, i, attempt().await, &mut last) {
            return v;
        }
    }
    panic!("testkit: {what} kept finding its ports taken: {last}");
}

/// One attempt's outcome: its value, or `None` after a taken port (logged,
/// kept in `last`) so the caller tries again; any other failure panics.
fn after_attempt<T>(
    what: &str,
    timeline: &Timeline,
    i: usize,
    outcome: Result<T, StartError>,
    last: &mut String,
) -> Option<T> {
    match outcome {
        Ok(v) => Some(v),
        Err(StartError::AddressInUse(detail)) => {
            note_fresh_ports(what, timeline, i, &detail);
            *last = detail;
            None
        }
        Err(StartError::Other(message)) => panic!("testkit: {what} did not start: {message}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sleeper(dir: &Path) -> ProcessSpec {
        ProcessSpec::new("sleeper", "sh", dir.join("sleeper.log"))
            .arg("-c")
            .arg("echo hello; exec sleep 600")
    }

    #[test]
    fn stop_continue_terminate_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = Timeline::new();
        let p = Process::start(sleeper(dir.path()), &t);
        wait::until_blocking("hello logged", Duration::from_secs(10), || {
            p.log_since_start().contains("hello")
        });
        p.pause();
        assert!(threads_stopped(p.pid().unwrap()), "paused means stopped");
        p.resume();
        wait::until_blocking("running again", Duration::from_secs(10), || {
            !threads_stopped(p.pid().unwrap())
        });
        assert!(p.is_running());
        let status = p.terminate(Duration::from_secs(10));
        assert!(status.is_some(), "sleep exits on SIGTERM");
        assert!(!p.is_running());
        p.start_again();
        assert!(p.is_running());
        p.kill9();
        assert!(!p.is_running());
        let text = t.to_string();
        assert!(
            text.contains("SIGSTOP") && text.contains("SIGKILL"),
            "{text}"
        );
    }

    #[test]
    fn the_watchdog_kills_the_child_when_its_pipe_closes() {
        let dir = tempfile::tempdir().unwrap();
        let t = Timeline::new();
        let p = Process::start(sleeper(dir.path()), &t);
        let pid = p.pid().unwrap();
        // Close the control pipe as the death of the test process would.
        if let Some(r) = p.slot().as_mut() {
            r.control.take();
        }
        wait::until_blocking("the child is gone", Duration::from_secs(10), || {
            p.exit_status().is_some()
        });
        assert!(!Path::new(&format!("/proc/{pid}/cmdline")).exists() || p.exit_status().is_some());
    }

    #[test]
    fn a_start_that_finds_its_port_taken_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let t = Timeline::new();
        let mut attempts = 0;
        let p = with_fresh_ports("squatted", &t, || {
            attempts += 1;
            let script = if attempts == 1 {
                "echo 'listen tcp 127.0.0.1:10001: bind: address already in use'; exit 1"
            } else {
                "echo up; exec sleep 600"
            };
            let spec = ProcessSpec::new("squatted", "sh", dir.path().join("squatted.log"))
                .arg("-c")
                .arg(script);
            let p = Process::start(spec, &t);
            // Some(exit status) when it died, Some(None) once it is up.
            let settled =
                wait::try_until_blocking("it exits or is up", Duration::from_secs(10), || {
                    p.exit_status()
                        .map(Some)
                        .or_else(|| p.log_since_start().contains("up").then_some(None))
                });
            match settled {
                Ok(None) => Ok(p),
                Ok(Some(_)) if p.address_in_use() => {
                    Err(StartError::AddressInUse(p.log_since_start()))
                }
                Ok(Some(status)) => Err(StartError::Other(format!("exited ({status})"))),
                Err(e) => Err(StartError::Other(e)),
            }
        });
        assert_eq!(attempts, 2);
        assert!(p.is_running());
        let text = t.to_string();
        assert!(text.contains("restarting it on fresh ports"), "{text}");
    }

    #[test]
    fn address_in_use_is_recognised() {
        assert!(is_address_in_use(
            "listen tcp 127.0.0.1:1: bind: address already in use"
        ));
        assert!(is_address_in_use(
            "OSError: [Errno 98] Address already in use"
        ));
        assert!(!is_address_in_use("connection refused"));
    }
}
