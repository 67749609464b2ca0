//! [`Election`]: the loop that contends for the lock, holds it, notices its
//! loss, gives it up, and contends again.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use seal_core::{HaBackend, HaLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{ActivePeriod, Advertisement, Role};

/// Timings and the lock key of an [`Election`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ElectionConfig {
    /// The lock's key in the backend (Vault's `core/lock`; a Consul backend
    /// puts its storage path in front).
    pub key: String,
    /// After [`Election::step_down`], how long this node stays out of the
    /// contest at most while waiting for another node to take the lock.
    /// The wait ends as soon as another node holds it; the bound only
    /// matters when no other node is contending (a lone node takes the
    /// lock back after it). Vault always sleeps 10 s.
    pub step_down_grace: Duration,
    /// How often the holder is read during that wait.
    pub holder_poll: Duration,
    /// First wait after a backend error; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest wait between attempts while the backend fails.
    pub retry_max: Duration,
    /// Shortest time between two lock attempts. A backend's `try_lock`
    /// waits for a release on its own (a Consul blocking query); this only
    /// keeps a backend that answers "held" at once from spinning the loop.
    pub min_attempt_interval: Duration,
    /// The longest wait for [`HaLock::release`]; after it the lock is left
    /// to expire in the backend (session TTL).
    pub release_timeout: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self {
            key: "core/lock".to_owned(),
            step_down_grace: Duration::from_secs(5),
            holder_poll: Duration::from_millis(25),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
            min_attempt_interval: Duration::from_millis(20),
            release_timeout: Duration::from_secs(5),
        }
    }
}

impl ElectionConfig {
    /// The defaults with another lock key.
    pub fn with_key(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// Sets [`step_down_grace`](Self::step_down_grace).
    #[must_use]
    pub fn with_step_down_grace(mut self, grace: Duration) -> Self {
        self.step_down_grace = grace;
        self
    }

    /// Sets the retry bounds after backend errors.
    #[must_use]
    pub fn with_retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }
}

/// What the caller asks of the loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Control {
    /// The node may lead (it is unsealed).
    contending: bool,
    /// Stop for good.
    shutdown: bool,
    /// Bumped by every step-down request.
    step_downs: u64,
}

struct Shared {
    backend: Arc<dyn HaBackend>,
    me: Advertisement,
    config: ElectionConfig,
    control: watch::Sender<Control>,
    role: watch::Sender<Role>,
    /// The number of the lock held (counted from 1), from the moment the
    /// backend hands it over until its release call has returned.
    holding: watch::Sender<Option<u64>>,
}

/// Leader election over any [`HaBackend`], with no knowledge of the
/// backend behind it.
///
/// The election runs as one background task. It stays [`Role::Idle`] until
/// [`contend`](Self::contend) (a node should contend only while it can
/// serve: unsealed), then loops: read the holder ([`Role::Standby`] with
/// its [`Advertisement`]), try to take the lock (the backend waits for a
/// release), and once it holds the lock publish [`Role::Active`] and wait
/// for the lock's loss, a [`step_down`](Self::step_down), a
/// [`withdraw`](Self::withdraw) or a [`shutdown`](Self::shutdown). In every
/// case the [`ActivePeriod`] ends first, then the lock is released.
///
/// Dropping the election stops it as [`shutdown`](Self::shutdown) does,
/// without waiting.
pub struct Election {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Election {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("key", &self.shared.config.key)
            .field("me", &self.shared.me)
            .field("role", &self.shared.role.borrow().name())
            .finish_non_exhaustive()
    }
}

impl Election {
    /// Starts the election task, idle until [`contend`](Self::contend).
    ///
    /// # Panics
    /// Outside a Tokio runtime (it spawns a task).
    pub fn start(backend: Arc<dyn HaBackend>, me: Advertisement, config: ElectionConfig) -> Self {
        let shared = Arc::new(Shared {
            backend,
            me,
            config,
            control: watch::Sender::new(Control::default()),
            role: watch::Sender::new(Role::Idle),
            holding: watch::Sender::new(None),
        });
        let task = tokio::spawn(run(shared.clone()));
        Self {
            shared,
            task: Mutex::new(Some(task)),
        }
    }

    /// This node's advertisement.
    pub fn advertisement(&self) -> &Advertisement {
        &self.shared.me
    }

    /// A receiver of every role change; the current role is
    /// [`borrow`](watch::Receiver::borrow)ed from it at any time.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    /// The current role.
    pub fn current(&self) -> Role {
        self.shared.role.borrow().clone()
    }

    /// The active node's advertisement: this node's while it is active,
    /// otherwise the holder's as last read (refreshed before every lock
    /// attempt and whenever an attempt returns); `None` when idle or when
    /// nobody holds the lock.
    pub fn leader(&self) -> Option<Advertisement> {
        match &*self.shared.role.borrow() {
            Role::Idle => None,
            Role::Standby { leader } => leader.clone(),
            Role::Active { .. } => Some(self.shared.me.clone()),
        }
    }

    /// Starts (or keeps) contending for the lock. Call it when the node can
    /// serve (unsealed).
    pub fn contend(&self) {
        self.shared.control.send_if_modified(|c| {
            let changed = !c.contending;
            c.contending = true;
            changed
        });
    }

    /// Stops contending (the node is sealing): the active period ends and
    /// the lock is released if held. Returns once it is released.
    pub async fn withdraw(&self) {
        self.shared.control.send_if_modified(|c| {
            let changed = c.contending;
            c.contending = false;
            changed
        });
        let mut holding = self.shared.holding.subscribe();
        let _ = holding.wait_for(Option::is_none).await;
    }

    /// Gives the lock up if this node holds it, and returns once it is
    /// released; `false` when it did not hold it. The node contends again
    /// only after another node has taken the lock, or after
    /// [`ElectionConfig::step_down_grace`] when none does.
    pub async fn step_down(&self) -> bool {
        let active = match &*self.shared.role.borrow() {
            Role::Active { period, .. } => Some(period.clone()),
            _ => None,
        };
        let Some(period) = active else {
            return false;
        };
        self.shared.control.send_modify(|c| c.step_downs += 1);
        let mut holding = self.shared.holding.subscribe();
        let _ = holding.wait_for(|h| *h != Some(period.id())).await;
        true
    }

    /// Stops the election for good: the active period ends, the lock is
    /// released if held, and the task finishes. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.control.send_modify(|c| c.shutdown = true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.shared.control.send_modify(|c| c.shutdown = true);
    }
}

/// Why an active period ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    Lost,
    StepDown,
    Withdraw,
    Shutdown,
}

async fn run(shared: Arc<Shared>) {
    let mut control = shared.control.subscribe();
    let mut periods = 0u64;
    let mut backoff: Option<Duration> = None;
    loop {
        let now = *control.borrow_and_update();
        if now.shutdown {
            break;
        }
        if !now.contending {
            set_role(&shared, Role::Idle);
            if control.changed().await.is_err() {
                break;
            }
            continue;
        }
        refresh_leader(&shared).await;
        let started = Instant::now();
        let attempt = {
            let value = shared.me.to_json();
            let lock = shared.backend.try_lock(&shared.config.key, &value);
            tokio::pin!(lock);
            loop {
                tokio::select! {
                    result = &mut lock => break Some(result),
                    changed = control.changed() => {
                        // Only a shutdown abandons the attempt; a withdraw
                        // lets it finish and then releases what it got.
                        if changed.is_err() || control.borrow_and_update().shutdown {
                            break None;
                        }
                    }
                }
            }
        };
        let Some(attempt) = attempt else { break };
        match attempt {
            Err(err) => {
                let wait = backoff.map_or(shared.config.retry_min, |b| {
                    (b * 2).min(shared.config.retry_max)
                });
                backoff = Some(wait);
                tracing::warn!(
                    error = %err,
                    retry_in = ?wait,
                    "HA lock attempt failed; the node stays standby and retries"
                );
                pause(&mut control, wait).await;
            }
            Ok(None) => {
                backoff = None;
                let elapsed = started.elapsed();
                if elapsed < shared.config.min_attempt_interval {
                    pause(&mut control, shared.config.min_attempt_interval - elapsed).await;
                }
            }
            Ok(Some(lock)) => {
                backoff = None;
                periods += 1;
                shared.holding.send_replace(Some(periods));
                let now = *control.borrow_and_update();
                if now.shutdown || !now.contending {
                    release(&shared, lock).await;
                    continue;
                }
                let reason = hold(&shared, &mut control, lock, periods).await;
                match reason {
                    EndReason::Shutdown => break,
                    EndReason::StepDown => wait_for_successor(&shared, &mut control).await,
                    EndReason::Lost | EndReason::Withdraw => {}
                }
            }
        }
    }
    set_role(&shared, Role::Idle);
    shared.holding.send_replace(None);
}

/// Holds `lock` until it is lost or the caller asks to give it up; ends
/// the active period, then releases.
async fn hold(
    shared: &Shared,
    control: &mut watch::Receiver<Control>,
    lock: Box<dyn HaLock>,
    id: u64,
) -> EndReason {
    let period = ActivePeriod::new(id);
    let lost = lock.lost();
    let seen_step_downs = control.borrow().step_downs;
    set_role(
        shared,
        Role::Active {
            since: SystemTime::now(),
            period: period.clone(),
        },
    );
    tracing::info!(key = %shared.config.key, api_addr = %shared.me.api_addr, "acquired the HA lock: this node is now active");
    let reason = loop {
        tokio::select! {
            () = lost.cancelled() => break EndReason::Lost,
            changed = control.changed() => {
                let now = *control.borrow_and_update();
                if changed.is_err() || now.shutdown {
                    break EndReason::Shutdown;
                } else if !now.contending {
                    break EndReason::Withdraw;
                } else if now.step_downs != seen_step_downs {
                    break EndReason::StepDown;
                }
            }
        }
    };
    // Stop everything tied to the period before anyone can be handed the
    // lock by our release.
    period.end();
    set_role(
        shared,
        match reason {
            EndReason::Lost | EndReason::StepDown => Role::Standby { leader: None },
            EndReason::Withdraw | EndReason::Shutdown => Role::Idle,
        },
    );
    match reason {
        EndReason::Lost => tracing::warn!(
            key = %shared.config.key,
            "leadership lost, stopping active operation: the HA lock is no longer held"
        ),
        EndReason::StepDown => tracing::info!("stepping down from active duty on request"),
        EndReason::Withdraw => tracing::info!("giving up the HA lock: the node is sealing"),
        EndReason::Shutdown => tracing::info!("giving up the HA lock: the node is shutting down"),
    }
    release(shared, lock).await;
    reason
}

async fn release(shared: &Shared, lock: Box<dyn HaLock>) {
    match tokio::time::timeout(shared.config.release_timeout, lock.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(
            error = %err,
            "releasing the HA lock failed; it expires on its own (session TTL)"
        ),
        Err(_) => tracing::warn!(
            timeout = ?shared.config.release_timeout,
            "releasing the HA lock timed out; it expires on its own (session TTL)"
        ),
    }
    shared.holding.send_replace(None);
}

/// Reads the holder and publishes `Standby` with it.
async fn refresh_leader(shared: &Shared) -> Option<Advertisement> {
    match shared.backend.holder(&shared.config.key).await {
        Ok(value) => {
            let leader = value.and_then(|raw| match Advertisement::from_json(&raw) {
                Ok(ad) => Some(ad),
                Err(err) => {
                    tracing::warn!(error = %err, "the HA lock holds a value this node cannot read");
                    None
                }
            });
            set_role(
                shared,
                Role::Standby {
                    leader: leader.clone(),
                },
            );
            leader
        }
        Err(err) => {
            tracing::debug!(error = %err, "reading the HA lock holder failed");
            // Keep the last known leader; only make sure we show as standby.
            shared.role.send_if_modified(|role| {
                if matches!(role, Role::Standby { .. }) {
                    false
                } else {
                    *role = Role::Standby { leader: None };
                    true
                }
            });
            None
        }
    }
}

/// After a step-down: stay out of the contest until another node holds the
/// lock, or the grace period ends, or the caller withdraws or shuts down.
async fn wait_for_successor(shared: &Shared, control: &mut watch::Receiver<Control>) {
    let deadline = tokio::time::Instant::now() + shared.config.step_down_grace;
    loop {
        if let Some(leader) = refresh_leader(shared).await
            && leader.node_id != shared.me.node_id
        {
            return;
        }
        let wake = (tokio::time::Instant::now() + shared.config.holder_poll).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            changed = control.changed() => {
                let now = *control.borrow();
                if changed.is_err() || now.shutdown || !now.contending {
                    return;
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                grace = ?shared.config.step_down_grace,
                "no other node took the HA lock after the step-down; contending again"
            );
            return;
        }
    }
}

/// Sleeps `wait`, cut short by any change of the caller's wishes.
async fn pause(control: &mut watch::Receiver<Control>, wait: Duration) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        _ = control.changed() => {}
    }
}

fn set_role(shared: &Shared, role: Role) {
    shared.role.send_if_modified(|current| {
        if *current == role {
            return false;
        }
        if let (Role::Standby { leader: Some(new) }, false) = (&role, current.is_active()) {
            let previous = match &*current {
                Role::Standby { leader } => leader.as_ref(),
                _ => None,
            };
            if previous != Some(new) {
                tracing::info!(leader = %new.api_addr, "active node is {}", new.api_addr);
            }
        }
        *current = role;
        true
    });
}
