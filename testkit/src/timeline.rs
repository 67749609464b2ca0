//! What happened when, for the failure message.
//!
//! Like Jepsen's history: a scenario records its steps and the harness
//! records what it did to processes (started, SIGSTOP, killed, restarted on
//! fresh ports, exited), each with the time since the timeline began. A
//! failing test prints it, so "n2 never became active" comes with "n1 was
//! SIGSTOPped at 3.2 s, n2's lock wait began at 3.4 s…".
//!
//! [`Timeline`] is a cheap, cloneable handle; give the same one to every
//! process of a scenario. [`Scenario`] owns one plus a temp directory and
//! prints the timeline when the test panics.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Event {
    at: Duration,
    subject: String,
    what: String,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    events: Mutex<Vec<Event>>,
}

/// A shared, append-only record of a test's steps and process events.
#[derive(Debug, Clone)]
pub struct Timeline {
    inner: Arc<Inner>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// A timeline starting now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                events: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Records that `subject` (a process name, or `step`) did or saw `what`.
    pub fn record(&self, subject: &str, what: impl Into<String>) {
        let event = Event {
            at: self.inner.started.elapsed(),
            subject: subject.to_owned(),
            what: what.into(),
        };
        self.inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// Records a named scenario step ("revoke KMS", "SIGSTOP n1").
    pub fn step(&self, what: impl Into<String>) {
        self.record("step", what);
    }

    /// Time since the timeline began.
    pub fn elapsed(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The instant the timeline began (times in it are offsets from here).
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// A mark for [`Timeline::since`]: how many events there are now.
    pub fn mark(&self) -> usize {
        self.events().len()
    }

    /// The events recorded from `mark` on, formatted as [`Display`]
    /// formats the whole timeline (for one scenario of several sharing a
    /// cluster and its timeline).
    ///
    /// [`Display`]: fmt::Display
    pub fn since(&self, mark: usize) -> String {
        let mut out = String::new();
        for e in self.events().iter().skip(mark) {
            out.push_str(&e.to_string());
        }
        out
    }

    fn events(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>9.3}s  {:<12} {}",
            self.at.as_secs_f64(),
            self.subject,
            self.what
        )
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in self.events().iter() {
            e.fmt(f)?;
        }
        Ok(())
    }
}

/// One test's context: a [`Timeline`] and a temp directory (configs, data,
/// logs). When the test panics, dropping it prints the timeline; the
/// processes print their own log tails as they drop.
///
/// ```
/// let sc = testkit::Scenario::new("doc example");
/// sc.step("nothing to do yet");
/// assert!(sc.dir().is_dir());
/// ```
#[derive(Debug)]
pub struct Scenario {
    name: String,
    timeline: Timeline,
    dir: tempfile::TempDir,
}

impl Scenario {
    /// A new scenario named `name` (shown in the failure output).
    ///
    /// # Panics
    /// When no temp directory can be created.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strongroom-scenario-")
            .tempdir()
            .unwrap_or_else(|e| panic!("testkit: temp dir for scenario {name}: {e}"));
        let timeline = Timeline::new();
        timeline.step(format!(
            "scenario {name} begins in {}",
            dir.path().display()
        ));
        Self {
            name: name.to_owned(),
            timeline,
            dir,
        }
    }

    /// The scenario's timeline (clone it into processes).
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Records a named step.
    pub fn step(&self, what: impl Into<String>) {
        self.timeline.step(what);
    }

    /// The scenario's temp directory (removed when it drops).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh subdirectory `name` of [`Scenario::dir`].
    ///
    /// # Panics
    /// When it cannot be created.
    pub fn subdir(&self, name: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("testkit: mkdir {}: {e}", path.display()));
        path
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n===== timeline of scenario {} =====\n{}===== end of timeline =====",
                self.name, self.timeline
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_in_order_with_their_subject() {
        let t = Timeline::new();
        t.step("first");
        t.record("n1", "SIGSTOP");
        let text = t.to_string();
        let first = text.find("first").unwrap_or(usize::MAX);
        let stop = text.find("n1").unwrap_or(0);
        assert!(first < stop, "{text}");
        assert!(text.contains("SIGSTOP"), "{text}");
    }

    #[test]
    fn since_shows_only_later_events() {
        let t = Timeline::new();
        t.step("before");
        let mark = t.mark();
        t.step("after");
        let text = t.since(mark);
        assert!(text.contains("after") && !text.contains("before"), "{text}");
    }
}
