//! AWS KMS auto-unseal for Strongroom.
//!
//! [`AwsKmsSeal`] implements [`seal_core::Seal`] with envelope encryption:
//! a fresh local AES-256-GCM data key encrypts the payload and KMS `Encrypt`
//! wraps the data key, as Vault's `awskms` seal does. Use it where an
//! operator would write a `seal "awskms"` stanza: read the stanza with
//! [`AwsKmsConfig::from_map`], let the environment override it with
//! [`AwsKmsConfig::apply_env`] (`VAULT_AWSKMS_SEAL_KEY_ID`,
//! `AWS_KMS_ENDPOINT`, `AWS_REGION`, …), then build the seal with
//! [`AwsKmsSeal::new`] and hand it to the core as an `Arc<dyn Seal>`.
//!
//! What it guarantees, because auto-unseal lives or dies by it:
//!
//! * Building the seal makes no KMS call, so a KMS outage at start does not
//!   stop the process; the failure surfaces on the first call and the
//!   caller retries.
//! * Failures are classified into [`seal_core::SealError`] variants the
//!   core can act on (unreachable, access denied, key disabled, key not
//!   found, throttled, invalid ciphertext) and worded for operators, naming
//!   the key and region and what to check. Never key material.
//! * Every call is bounded (connect, per-attempt and whole-operation
//!   timeouts); only transient failures are retried, with backoff.
//! * `Decrypt` is called without a key id, so blobs written under an earlier
//!   `kms_key_id` still open; [`AwsKmsSeal::rewrap`] moves them to the
//!   configured key.
//!
//! Blob layout (after the [`seal_core::blob`] header): format version
//! `0x01`, then length-prefixed fields — key ARN as returned by KMS
//! `Encrypt` (u16 length), wrapped data key (u16), nonce (u8, 12 bytes),
//! AES-256-GCM ciphertext with tag (u32). The GCM associated data is every
//! blob byte before the ciphertext, then the caller's `aad`, so no byte can
//! be changed unnoticed. Parsing is bounds-checked and never panics.
//!
//! Tests run it against a real `moto_server` (the KMS JSON protocol) through
//! the workspace's `testkit` crate: keys, IAM users whose KMS permission can
//! be revoked, outages.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use seal_awskms::{AwsKmsConfig, AwsKmsSeal};
//! use seal_core::Seal;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // The attributes of `seal "awskms" { … }` as the server parsed them.
//! let stanza = BTreeMap::from([
//!     ("region".to_owned(), "eu-west-1".to_owned()),
//!     ("kms_key_id".to_owned(), "alias/strongroom-unseal".to_owned()),
//! ]);
//! let mut config = AwsKmsConfig::from_map(&stanza)?;
//! config.apply_env(); // VAULT_AWSKMS_SEAL_KEY_ID, AWS_KMS_ENDPOINT, AWS_REGION …
//! let seal = AwsKmsSeal::new(config).await?; // no KMS call yet
//!
//! let blob = seal.encrypt(b"root key bytes", b"core/hsm/barrier-unseal-keys").await?;
//! let back = seal.decrypt(&blob, b"core/hsm/barrier-unseal-keys").await?;
//! assert_eq!(back.as_slice(), b"root key bytes");
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod format;
mod seal;

pub use config::{
    AwsKmsConfig, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_OPERATION_TIMEOUT, DEFAULT_REGION, SecretString,
};
pub use error::AwsKmsError;
pub use seal::AwsKmsSeal;
