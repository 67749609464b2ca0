//! [`Role`] and [`ActivePeriod`]: what an [`Election`](crate::Election)
//! reports about this node.

use std::fmt;
use std::time::SystemTime;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::Advertisement;

/// This node's place in the election, as published on
/// [`Election::role`](crate::Election::role).
#[derive(Debug, Clone)]
pub enum Role {
    /// Not contending: the caller has not said the node may lead (a sealed
    /// node), or the election was shut down.
    Idle,
    /// Contending, and another node holds the lock (or nobody does yet).
    Standby {
        /// The holder's advertisement, as last read from the lock; `None`
        /// when nobody holds it or its value could not be read.
        leader: Option<Advertisement>,
    },
    /// This node holds the lock.
    Active {
        /// When the lock was taken.
        since: SystemTime,
        /// The active period: ends (is cancelled) the moment the lock is
        /// lost, given up, or the election stops, before anyone else can
        /// take the lock from a release.
        period: ActivePeriod,
    },
}

impl Role {
    /// Whether this node holds the lock.
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active { .. })
    }

    /// Whether this node is contending while someone else (or nobody) holds
    /// the lock.
    pub fn is_standby(&self) -> bool {
        matches!(self, Self::Standby { .. })
    }

    /// A short name for logs and metrics: `idle`, `standby`, `active`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Standby { .. } => "standby",
            Self::Active { .. } => "active",
        }
    }
}

/// Roles are equal when they are the same variant with the same leader, or
/// the same active period.
impl PartialEq for Role {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Idle, Self::Idle) => true,
            (Self::Standby { leader: a }, Self::Standby { leader: b }) => a == b,
            (Self::Active { period: a, .. }, Self::Active { period: b, .. }) => a.id == b.id,
            _ => false,
        }
    }
}

/// One uninterrupted stretch of holding the lock.
///
/// Everything a node does *because* it is active (serving writes, periodic
/// tasks) should stop when the period ends: derive tokens from
/// [`token`](Self::token) or select on [`ended`](Self::ended). The election
/// ends the period before it releases the lock, so work tied to it has
/// stopped before another node can be handed the lock by that release.
#[derive(Clone)]
pub struct ActivePeriod {
    id: u64,
    ended: CancellationToken,
}

impl fmt::Debug for ActivePeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivePeriod")
            .field("id", &self.id)
            .field("ended", &self.ended.is_cancelled())
            .finish()
    }
}

impl ActivePeriod {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            ended: CancellationToken::new(),
        }
    }

    pub(crate) fn end(&self) {
        self.ended.cancel();
    }

    /// Counts this election's active periods from 1: a new number means
    /// the lock was taken again.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the period is over.
    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Completes when the period ends.
    pub fn ended(&self) -> WaitForCancellationFuture<'_> {
        self.ended.cancelled()
    }

    /// A token cancelled when the period ends (children of it too).
    pub fn token(&self) -> CancellationToken {
        self.ended.clone()
    }
}
