//! Leader election over any [`HaBackend`](seal_core::HaBackend).
//!
//! Several nodes share one storage; exactly one of them, the **active**
//! node, may write. The others are **standbys** that know where the active
//! node is (to forward requests to it) and take over when it goes away.
//! This crate is the loop that makes that happen, with no knowledge of the
//! lock service behind it (Consul sessions, or
//! [`MemoryHaBackend`](seal_core::MemoryHaBackend) in one process):
//!
//! * [`Election`] — start one per node with its [`Advertisement`] (the
//!   address clients and other nodes reach it at, stored as the lock's
//!   value). It is idle until [`Election::contend`]; call that once the
//!   node can serve (unsealed) and [`Election::withdraw`] when it can no
//!   longer (sealing). [`Election::step_down`] hands the lock to another
//!   node; [`Election::shutdown`] releases it on the way out.
//! * [`Role`] — published on a `tokio::sync::watch` channel
//!   ([`Election::role`]): [`Role::Idle`], [`Role::Standby`] with the
//!   leader's advertisement, or [`Role::Active`] with an [`ActivePeriod`]
//!   that ends the moment the lock is lost or given up — *before* the lock
//!   is released, so work tied to it stops before anyone else can take over.
//!
//! Nothing here sleeps a fixed time between attempts: the backend's
//! `try_lock` waits for a release (a blocking query), backend errors back
//! off from 100 ms to 2 s, and a step-down waits only until another node
//! holds the lock.
//!
//! ```
//! use std::sync::Arc;
//! use ha_lock::{Advertisement, Election, ElectionConfig, Role};
//! use seal_core::MemoryHaBackend;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let backend = Arc::new(MemoryHaBackend::new());
//! let me = Advertisement::new("https://10.0.0.5:8200", "https://10.0.0.5:8201", "node-a");
//! let election = Election::start(backend, me, ElectionConfig::default());
//! let mut role = election.role();
//! election.contend(); // the node is unsealed: it may lead
//! let period = loop {
//!     if let Role::Active { period, .. } = &*role.borrow_and_update() {
//!         break period.clone();
//!     }
//!     role.changed().await.unwrap();
//! };
//! assert_eq!(election.leader().unwrap().api_addr, "https://10.0.0.5:8200");
//! election.withdraw().await; // sealing: the period ends, the lock is released
//! assert!(period.is_ended());
//! assert_eq!(election.current(), Role::Idle);
//! election.shutdown().await;
//! # }
//! ```

mod advertisement;
mod election;
mod role;

pub use advertisement::{Advertisement, AdvertisementError};
pub use election::{Election, ElectionConfig};
pub use role::{ActivePeriod, Role};
