//! Consul KV storage for Strongroom.
//!
//! [`ConsulStorage`] implements [`seal_core::Storage`] over a Consul agent's
//! HTTP API, for deployments that keep their data in a Consul cluster (the
//! embedded `storage-redb` is the choice for one machine). Build it from a
//! [`ConsulConfig`], usually read from Vault's `storage "consul"` stanza with
//! [`ConsulConfig::from_map`].
//!
//! What it does differently from Vault's Consul backend, on purpose:
//!
//! * **`max_parallel` is enforced** (a semaphore around every request;
//!   [`ConsulStorage::request_stats`] shows the peak). Vault parses it into
//!   a shadowed variable and always uses 128.
//! * **Limits are checked before sending**, with errors naming the key, the
//!   size and the limit. Every write goes through `/v1/txn`, where values are
//!   base64-encoded, so the largest storable value is what fits a 512 KiB
//!   transaction body (about 378 KiB with Consul's defaults), not the
//!   512 KiB of a plain KV PUT. Transactions over [`MAX_TRANSACTION_OPS`] (63)
//!   operations or 512 KiB of body are refused, never split: the
//!   [`seal_core::Storage::transaction`] contract promises atomicity.
//! * **Faults are told apart**: connection refused, TLS failure, timeout,
//!   `No cluster leader`, rate limiting and ACL refusal are distinct
//!   [`ConsulError`] variants. Transient ones are retried with bounded
//!   exponential backoff, then surface as [`seal_core::StorageError::Unavailable`];
//!   a write is reported done only when Consul answered 200.
//! * **Writes can be fenced** on the HA lock ([`WriteFence`]): a
//!   `check-session` operation first in every transaction.
//! * **Concurrent writes share transactions** (group commit): at most two
//!   `/v1/txn` are in flight, and writes arriving meanwhile go together in
//!   the next, each caller answered once its transaction committed. Most of
//!   a write's cost in Consul is per request, so under load this halves
//!   Consul's CPU per write (`BENCHMARKS.md`).
//!
//! [`ConsulHaBackend`] is the [`seal_core::HaBackend`] beside it: leader
//! election over a Consul session and the `<path>core/lock` key, built on a
//! `ConsulStorage` whose client it shares. Standbys wait on blocking queries
//! (a release wakes them at once) with a session kept ready, and holding
//! the lock arms the storage's write fence, so a deposed node's writes fail
//! with [`seal_core::StorageError::Fenced`] and mark its lock lost.
//!
//! [`ConsulServiceRegistration`] publishes the node's role and seal state
//! as Vault's `service_registration "consul"` does: service `vault` with
//! tags `active`/`standby` and `initialized`, and a TTL check that is
//! critical while the node is sealed.
//!
//! Its tests run against a real `consul agent -dev` (plain, ACL or HTTPS
//! mode) and 3-server clusters through the workspace's `testkit` crate.
//!
//! ```
//! use std::collections::BTreeMap;
//! use seal_core::Storage;
//! use storage_consul::{ConsulConfig, ConsulStorage, MAX_TRANSACTION_OPS};
//!
//! # fn main() -> Result<(), storage_consul::ConsulError> {
//! let stanza: BTreeMap<String, String> = [
//!     ("address", "127.0.0.1:8500"),
//!     ("path", "strongroom/"),
//!     ("max_parallel", "32"),
//!     ("consistency_mode", "strong"),
//! ]
//! .into_iter()
//! .map(|(k, v)| (k.to_owned(), v.to_owned()))
//! .collect();
//! let config = ConsulConfig::from_map_with_env(&stanza, |_| None)?;
//! let storage = ConsulStorage::new(config)?; // sends nothing yet
//! assert_eq!(storage.path(), "strongroom/");
//! assert_eq!(storage.limits().max_transaction_ops, Some(MAX_TRANSACTION_OPS));
//! assert!(storage.limits().max_value_size < Some(512 * 1024));
//! # Ok(())
//! # }
//! ```
//!
//! Electing a leader (against a running agent):
//!
//! ```no_run
//! use seal_core::{HaBackend, Storage};
//! use storage_consul::{ConsulConfig, ConsulHaBackend, ConsulStorage};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = ConsulStorage::new(ConsulConfig::with_address("127.0.0.1:8500")?)?;
//! let ha = ConsulHaBackend::new(&storage);
//! let advert = br#"{"api_addr":"https://10.0.0.1:8200"}"#;
//! match ha.try_lock("core/lock", advert).await? {
//!     Some(lock) => {
//!         storage.put("core/hello", b"fenced on the lock").await?;
//!         lock.release().await?; // the next holder needs no lock-delay
//!     }
//!     None => println!("active node: {:?}", ha.holder("core/lock").await?),
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod dead_leader;
mod error;
mod group_commit;
mod ha;
mod registration;
mod session;
mod storage;

pub use client::RequestStats;
pub use config::{
    CONSUL_DEFAULT_MAX_SIZE, ConsistencyMode, ConsulConfig, ConsulToken, DeadLeaderConfig,
    RegistrationConfig, Scheme, TlsMinVersion, parse_duration,
};
pub use error::ConsulError;
pub use ha::{ConsulHaBackend, LOCK_FLAGS};
pub use registration::{ConsulServiceRegistration, RegistrationState, SEALED_CHECK_NAME};
pub use session::SESSION_NAME;
pub use storage::{ConsulStorage, MAX_TRANSACTION_OPS, WriteFence};
