//! [`ShamirError`], the one error type of this crate.

/// Why splitting, combining, parsing or an unseal step failed.
///
/// Messages begin with the wording Vault uses for the same failure (so
/// operators and tooling that know Vault recognise them) and then say what
/// to check. None carries key or share bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShamirError {
    /// A share count / threshold pair Vault would refuse. The message is
    /// Vault's own (`SealConfig.Validate`).
    #[error("{reason}")]
    InvalidConfig {
        /// Vault's message, e.g. "threshold cannot be larger than shares".
        reason: &'static str,
    },

    /// [`split`](crate::split) was given a secret whose shares would not fit
    /// the share format (16 to 33 bytes).
    #[error(
        "cannot split a {len}-byte secret: unseal key shares must be 16 to 33 bytes, so the secret \
         must be 15 to 32 bytes (16 to 33 bytes when there is a single share)"
    )]
    SecretLength {
        /// Length of the secret given.
        len: usize,
    },

    /// Fewer shares than the interpolation needs.
    #[error(
        "less than two parts cannot be used to reconstruct the secret: got {got} share(s); \
         enter at least the threshold number of different shares"
    )]
    TooFewShares {
        /// Shares given.
        got: usize,
    },

    /// Shares of different lengths cannot belong to one split.
    #[error(
        "all parts must be the same length: got shares of {first} and {other} bytes; check that \
         every share comes from the same key set"
    )]
    LengthMismatch {
        /// Length of the first share.
        first: usize,
        /// Length of the first share that differs.
        other: usize,
    },

    /// Two shares carry the same x-coordinate (the last byte).
    #[error(
        "duplicate part detected: two shares have the same x-coordinate (last byte); each share \
         must be entered once and come from the same key set"
    )]
    DuplicateShare,

    /// A share whose x-coordinate (last byte) is 0, which no split produces
    /// (x = 0 is where the secret itself lies).
    #[error(
        "invalid key share: its x-coordinate (last byte) is 0, which no split produces; the share \
         is corrupt or not an unseal key share"
    )]
    ZeroCoordinate,

    /// A share is shorter than the format allows.
    #[error("invalid key: key is shorter than minimum {min} bytes (got {len} bytes)")]
    ShareTooShort {
        /// Length received.
        len: usize,
        /// The minimum.
        min: usize,
    },

    /// A share is longer than the format allows.
    #[error("invalid key: key is longer than maximum {max} bytes (got {len} bytes)")]
    ShareTooLong {
        /// Length received.
        len: usize,
        /// The maximum.
        max: usize,
    },

    /// Share text that is neither hex nor standard base64.
    #[error("'key' must be a valid hex or base64 string")]
    InvalidEncoding,

    /// An unseal step was given a threshold outside 1..=255.
    #[error(
        "invalid threshold {threshold}: must be 1 to 255; the stored seal configuration may be \
         corrupt"
    )]
    InvalidThreshold {
        /// The threshold given.
        threshold: usize,
    },

    /// A nonce-protected operation (rekey, generate-root) was given another
    /// operation's nonce.
    #[error(
        "incorrect nonce supplied; nonce for this operation is {expected:?}; another operator may \
         have restarted the operation"
    )]
    NonceMismatch {
        /// The nonce of the operation in progress (not secret: status shows it).
        expected: String,
    },

    /// A nonce-protected share arrived but no operation was started.
    #[error("no operation in progress: start one first (e.g. rekey init) and submit its nonce")]
    NoOperation,

    /// A share without a nonce arrived while a nonce-protected operation is
    /// in progress.
    #[error("a nonce is required: a nonce-protected operation (nonce {expected:?}) is in progress")]
    NonceRequired {
        /// The nonce of the operation in progress.
        expected: String,
    },

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

impl From<seal_core::SecretError> for ShamirError {
    fn from(err: seal_core::SecretError) -> Self {
        match err {
            seal_core::SecretError::InvalidLength { actual, .. }
                if actual < crate::MIN_SHARE_LEN =>
            {
                Self::ShareTooShort {
                    len: actual,
                    min: crate::MIN_SHARE_LEN,
                }
            }
            seal_core::SecretError::InvalidLength { actual, .. } => Self::ShareTooLong {
                len: actual,
                max: crate::MAX_SHARE_LEN,
            },
            seal_core::SecretError::Random(msg) => Self::Random(msg),
            // SecretError is non_exhaustive; a future variant is reported as
            // a random-source failure would be: the operation did not happen.
            other => Self::Random(other.to_string()),
        }
    }
}
