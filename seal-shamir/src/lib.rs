//! Shamir secret sharing in Vault's format, the Shamir seal, and the
//! unseal-progress state machine.
//!
//! * [`split`] / [`combine`]: GF(2^8) Shamir sharing with the AES polynomial,
//!   shares laid out as Vault and OpenBao lay them out (y-bytes, then the
//!   x-coordinate as the last byte), so keys from a Vault or OpenBao
//!   `operator init` combine here and keys split here work there.
//!   [`parse_share`] reads a share as typed (hex or base64, Vault's rule);
//!   [`validate_config`] checks share counts against Vault's limits.
//! * [`ShamirSeal`]: a [`seal_core::Seal`] that wraps the root key with
//!   AES-256-GCM under the key-encryption key (KEK) the shares combine to.
//! * [`UnsealProgress`]: collects shares from several operators (unseal,
//!   recovery keys, rekey), ignoring duplicates, until the threshold is
//!   reached; safe to call from concurrent request handlers.
//!
//! Field arithmetic is constant-time (no lookup tables, no branches on
//! secret data); every random value comes from the operating system's CSPRNG.
//!
//! ```
//! use seal_shamir::{combine, parse_share, split};
//!
//! # fn main() -> Result<(), seal_shamir::ShamirError> {
//! let kek = [7u8; 32];
//! let shares = split(&kek, 5, 3)?;
//! assert_eq!(shares[0].len(), 33); // 32 y-bytes, then x
//!
//! // Operators type shares back as hex (or base64).
//! let typed: Vec<String> = shares[1..4]
//!     .iter()
//!     .map(|s| hex_of(s.expose_secret()))
//!     .collect();
//! let parsed = typed
//!     .iter()
//!     .map(|t| parse_share(t))
//!     .collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(combine(&parsed)?.as_slice(), &kek);
//! # Ok(())
//! # }
//! # fn hex_of(b: &[u8]) -> String { b.iter().map(|x| format!("{x:02x}")).collect() }
//! ```

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

mod error;
mod gf256;
mod progress;
mod seal;
mod shamir;

pub use error::ShamirError;
pub use progress::{ProgressStatus, Submit, UnsealProgress};
pub use seal::ShamirSeal;
pub use shamir::{
    MAX_SHARE_LEN, MAX_SHARES, MIN_SHARE_LEN, combine, combine_bytes, parse_share, split,
    validate_config,
};
