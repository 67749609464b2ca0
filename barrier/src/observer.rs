//! Timing hooks: how long each barrier operation took, for metrics
//! (Vault's `vault.barrier.get`, `vault.barrier.put`, ...). The barrier has
//! no metrics dependency; whoever assembles it hands it an [`OpObserver`].

use std::fmt;
use std::time::Duration;

/// A data operation of the barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarrierOp {
    /// [`Barrier::get`](crate::Barrier::get).
    Get,
    /// [`Barrier::put`](crate::Barrier::put).
    Put,
    /// [`Barrier::delete`](crate::Barrier::delete).
    Delete,
    /// [`Barrier::list`](crate::Barrier::list).
    List,
    /// [`Barrier::transaction`](crate::Barrier::transaction).
    Transaction,
}

impl BarrierOp {
    /// The operation's name as Vault's metrics spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Delete => "delete",
            Self::List => "list",
            Self::Transaction => "transaction",
        }
    }
}

/// Told the duration of every barrier operation
/// ([`Barrier::set_observer`](crate::Barrier::set_observer)). Called on the
/// request path: implementations must be cheap and must not block.
pub trait OpObserver: Send + Sync + fmt::Debug {
    /// `op` took `elapsed` (success or failure).
    fn observed(&self, op: BarrierOp, elapsed: Duration);
}
