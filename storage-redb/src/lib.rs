//! Strongroom's durable embedded [`Storage`](seal_core::Storage): one
//! [redb](https://www.redb.org) file on local disk, the server's default
//! when it runs on one machine.
//!
//! Use [`RedbStorage`] when a single node keeps its own data; use the Consul
//! backend (`storage-consul`) when several nodes share it, and
//! [`seal_core::MemoryStorage`] for tests.
//!
//! * **Durable**: every acknowledged write is fsync'd before the call
//!   returns (redb's `Durability::Immediate`, two-phase commit by default),
//!   so it survives `SIGKILL` or power loss; a crashed file is repaired on
//!   the next open.
//! * **Group commit**: an fsync, not CPU, bounds a store that commits once
//!   per write. One writer thread commits all writes queued at the time in
//!   a single transaction and then answers each caller, so 16 concurrent
//!   writers share one fsync instead of waiting for sixteen.
//!   [`RedbStorage::stats`] reports writes per commit for metrics.
//! * **Non-blocking**: reads run on Tokio's blocking pool against redb's
//!   snapshots and never wait for the writer.
//!
//! ```
//! use seal_core::{Storage, TxnOp};
//! use storage_redb::RedbStorage;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let storage = RedbStorage::open(dir.path().join("strongroom.redb"))?;
//! storage.put("core/seal-config", b"{}").await?;
//! storage
//!     .transaction(vec![
//!         TxnOp::put("logical/kv/a", b"1".to_vec()),
//!         TxnOp::delete("logical/kv/old"),
//!     ])
//!     .await?;
//! assert_eq!(storage.list("").await?, ["core/", "logical/"]);
//! assert_eq!(storage.get("logical/kv/a").await?.as_deref(), Some(&b"1"[..]));
//! # Ok(())
//! # }
//! ```

mod error;
mod options;
mod store;
mod writer;

pub use error::RedbStorageError;
pub use options::{
    DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_WRITES, DEFAULT_MAX_TRANSACTION_OPS,
    DEFAULT_MAX_VALUE_SIZE, RedbOptions,
};
pub use store::RedbStorage;
pub use writer::RedbStats;
