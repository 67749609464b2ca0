//! The embeddable Strongroom core.
//!
//! [`Core`] composes the pieces of the workspace into what Vault's core does
//! for secret storage: an injected [`Storage`](seal_core::Storage) holds
//! everything, a [`barrier::Barrier`] encrypts it, and a seal protects the
//! barrier's root key — Shamir unseal keys held by operators, or an auto
//! seal (AWS KMS) that unseals on its own. The core owns the state machine
//!
//! ```text
//! uninitialized --init--> sealed --unseal (key shares | auto seal)--> unsealed
//!                            ^------------------- seal ------------------'
//! ```
//!
//! With an HA backend ([`CoreBuilder::ha`]) an unsealed node is either the
//! **active** node (it holds the lock and serves) or a **standby** (it
//! answers [`CoreError::Standby`] with the active node's address, for the
//! HTTP layer to forward to); see [`Core::node_state`], [`Core::leader`]
//! and [`Core::step_down`]. A standby is promoted by reloading the keyring,
//! mounts and tokens from storage; a node that loses the lock refuses
//! every storage operation at once and stays unsealed.
//!
//! and the operations around it: [`Core::init`], [`Core::unseal`],
//! [`Core::seal`], [`Core::rotate`], [`Core::rekey_init`] and friends,
//! status for probes ([`Core::seal_status`], [`Core::health`]), and
//! [`Core::handle`] for logical requests (KV engines, tokens, mounts — see
//! [`logical`]), which needs an unsealed core.
//!
//! Use [`Core::builder`] with [`CoreBuilder::shamir`] when operators hold
//! the keys, or [`CoreBuilder::auto_seal`] with a KMS seal; call
//! [`Core::spawn_auto_unseal`] on auto-seal nodes so a node that started
//! while the KMS was unreachable unseals itself when it returns.
//!
//! ```
//! use std::sync::Arc;
//! use seal_core::MemoryStorage;
//! use strongroom::{Core, InitParams};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), strongroom::CoreError> {
//! let core = Core::builder()
//!     .storage(Arc::new(MemoryStorage::new()))
//!     .shamir()
//!     .build()
//!     .await?;
//! let init = core
//!     .init(InitParams { secret_shares: 3, secret_threshold: 2, ..Default::default() })
//!     .await?;
//! assert!(core.seal_status().await?.sealed);
//! core.unseal(&init.keys[0]).await?;
//! let status = core.unseal(&init.keys_base64[2]).await?;
//! assert!(!status.sealed);
//! core.seal(&init.root_token).await?;
//! assert!(core.is_sealed());
//! # Ok(())
//! # }
//! ```

mod active_view;
mod adopt;
mod auth;
mod auto_unseal;
mod break_glass;
mod cache;
mod config;
mod core;
mod error;
mod generate_root;
mod ha;
mod ha_status;
mod init;
pub mod logical;
mod migrate;
mod rekey;
mod rotate;
mod seal_set;
mod seal_upkeep;
mod takeover;
mod types;
mod unseal;

pub use crate::adopt::{AdoptStep, VaultTakeover};
pub use crate::auto_unseal::{AutoUnsealState, AutoUnsealStatus};
pub use crate::core::{Core, CoreBuilder};
pub use crate::ha_status::{HaNode, HaStatus};
pub use cache::{CacheConfig, CacheStats, DEFAULT_CACHE_BYTES, DEFAULT_CACHE_ENTRIES, ReadCache};
pub use error::CoreError;
pub use generate_root::{
    GenerateRootStatus, ROOT_TOKEN_OTP_LENGTH, decode_root_token, encode_root_token,
};
pub use logical::{LogicalError, LogicalRequest, LogicalResponse, Operation, TokenEntry};
pub use migrate::{MigrationHook, MigrationStep};
pub use rotate::RotationConfigUpdate;
pub use seal_core::SealType;
pub use seal_set::{NamedSeal, SealBackendStatus};
pub use takeover::AdoptReport;
pub use types::{
    CoreMetrics, CoreOptions, HaMode, HealthStatus, InitParams, InitResult, KeyStatus,
    LeaderAddress, LeaderStatus, NodeState, RekeyParams, RekeyStatus, RekeyUpdateResult,
    RekeyVerifyResult, RekeyVerifyStatus, RotationConfig, SealBackendStatusReport, SealStatus,
    VERSION,
};
