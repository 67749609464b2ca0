//! "Wait until this holds, by this deadline" — never a bare sleep.
//!
//! A check returns `bool`, `Option<T>` or `Result<T, E>` (the `Err` says
//! why it does not hold yet, and the last one is in the panic message).
//! Polling starts at 20 ms and backs off to 250 ms, so a fast condition
//! costs little and a slow one does not hammer a loaded machine.
//!
//! ```
//! # async fn example() {
//! use std::time::Duration;
//! let start = std::time::Instant::now();
//! testkit::wait::until("100 ms have passed", Duration::from_secs(5), || async {
//!     start.elapsed() >= Duration::from_millis(100)
//! })
//! .await;
//! # }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// What a check returns: whether the condition holds (with a value), or
/// why not yet.
pub trait Outcome {
    /// The value handed back once the condition holds.
    type Value;
    /// `Ok(value)` when it holds, else what was seen instead.
    fn into_outcome(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn into_outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_owned())
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

fn next_interval(current: Duration) -> Duration {
    (current * 3 / 2).min(Duration::from_millis(250))
}

const FIRST_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it holds or `timeout` passes.
///
/// # Errors
/// When the deadline passes: a message naming `what`, the timeout and the
/// last thing `check` said.
pub async fn try_until<O, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<O::Value, String>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = FIRST_INTERVAL;
    loop {
        let last = match check().await.into_outcome() {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting until {what} (last: {last})"
            ));
        }
        tokio::time::sleep(interval).await;
        interval = next_interval(interval);
    }
}

/// Polls `check` until it holds; panics when `timeout` passes.
///
/// # Panics
/// When the deadline passes (naming `what` and the last observation).
pub async fn until<O, F, Fut>(what: &str, timeout: Duration, check: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    try_until(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`try_until`] for blocking code (the process and Consul layers).
///
/// # Errors
/// As [`try_until`].
pub fn try_until_blocking<O: Outcome>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> O,
) -> Result<O::Value, String> {
    let deadline = Instant::now() + timeout;
    let mut interval = FIRST_INTERVAL;
    loop {
        let last = match check().into_outcome() {
            Ok(v) => return Ok(v),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting until {what} (last: {last})"
            ));
        }
        std::thread::sleep(interval);
        interval = next_interval(interval);
    }
}

/// [`until`] for blocking code.
///
/// # Panics
/// As [`until`].
pub fn until_blocking<O: Outcome>(
    what: &str,
    timeout: Duration,
    check: impl FnMut() -> O,
) -> O::Value {
    try_until_blocking(what, timeout, check).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_observation_is_in_the_error() {
        let mut n = 0;
        let err = try_until_blocking("n reaches 1000", Duration::from_millis(100), || {
            n += 1;
            if n >= 1000 {
                Ok(())
            } else {
                Err(format!("n = {n}"))
            }
        })
        .err()
        .unwrap_or_default();
        assert!(
            err.contains("n reaches 1000") && err.contains("last: n = "),
            "{err}"
        );
    }

    #[tokio::test]
    async fn returns_the_value_once_it_holds() {
        let mut n = 0;
        let v = until("third call", Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move { (now >= 3).then_some(now) }
        })
        .await;
        assert_eq!(v, 3);
    }
}
