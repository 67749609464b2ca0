//! Barrier key rotation: `sys/rotate`, `sys/key-status`, `sys/rotate/config`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;

use crate::logical::Operation;
use crate::types::{KeyStatus, RotationConfig};
use crate::{Core, CoreError};

/// A change to the rotation policy (`POST sys/rotate/config`): absent
/// fields keep their current value, as in Vault.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RotationConfigUpdate {
    /// Encryptions after which the key rotates (0: the maximum, about
    /// 3.86e9; values below one million are raised to it).
    pub max_operations: Option<u64>,
    /// Age after which the key rotates: a Go-style duration (`"24h"`,
    /// `"720h"`, `"0s"` for never) or a number of seconds. At least 24 h.
    pub interval: Option<String>,
    /// Whether automatic rotation happens at all.
    pub enabled: Option<bool>,
}

/// Parses a Go-style duration (`"1h30m"`, `"90s"`, `"0"`) or plain seconds.
///
/// # Errors
/// A message naming the bad input.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("invalid duration {text:?}: use seconds or a duration such as \"24h\"");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = unit
            .checked_mul(u32::try_from(value).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats a duration as Go's `Duration.String()` does for whole seconds
/// (`"24h0m0s"`, `"0s"`).
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn to_api(cfg: barrier::RotationConfig) -> RotationConfig {
    RotationConfig {
        max_operations: cfg.max_operations,
        interval: format_duration(cfg.interval.unwrap_or(Duration::ZERO)),
        enabled: cfg.enabled,
    }
}

impl Core {
    /// Installs a new barrier key term (`sys/rotate`); old terms stay so old
    /// entries stay readable. Returns the new term.
    ///
    /// # Errors
    /// [`CoreError::Sealed`]; [`CoreError::PermissionDenied`] (or a 403
    /// [`CoreError::Logical`]) when the token's policies do not allow it; barrier errors (the old key then stays active).
    pub async fn rotate(&self, token: &str) -> Result<u32, CoreError> {
        self.audited(token, Operation::Update, "sys/rotate", async {
            let term = self.inner.barrier.rotate().await?;
            tracing::info!(term, "barrier key rotated by an operator request");
            Ok(term)
        })
        .await
    }

    /// The active key term, its install time and use (`sys/key-status`).
    ///
    /// # Errors
    /// [`CoreError::Sealed`]; [`CoreError::PermissionDenied`] (or a 403
    /// [`CoreError::Logical`]) when the token's policies do not allow it.
    pub async fn key_status(&self, token: &str) -> Result<KeyStatus, CoreError> {
        self.audited(token, Operation::Read, "sys/key-status", async {
            let status = self.inner.barrier.key_status().await?;
            Ok(KeyStatus {
                term: status.term,
                install_time: status
                    .install_time
                    .format(&Rfc3339)
                    .unwrap_or_else(|_| status.install_time.to_string()),
                encryptions: status.encryptions,
            })
        })
        .await
    }

    /// The automatic rotation policy (`GET sys/rotate/config`).
    ///
    /// # Errors
    /// [`CoreError::Sealed`]; [`CoreError::PermissionDenied`] (or a 403
    /// [`CoreError::Logical`]) when the token's policies do not allow it.
    pub async fn rotation_config(&self, token: &str) -> Result<RotationConfig, CoreError> {
        self.audited(token, Operation::Read, "sys/rotate/config", async {
            Ok(to_api(self.inner.barrier.rotation_config().await?))
        })
        .await
    }

    /// Changes the automatic rotation policy (`POST sys/rotate/config`);
    /// out-of-range values are brought into range as Vault does.
    ///
    /// # Errors
    /// [`CoreError::InvalidRequest`] for an unparsable interval;
    /// [`CoreError::Sealed`]; [`CoreError::PermissionDenied`] (or a 403
    /// [`CoreError::Logical`]) when the token's policies do not allow it; barrier errors (the old policy then stays).
    pub async fn set_rotation_config(
        &self,
        token: &str,
        update: RotationConfigUpdate,
    ) -> Result<RotationConfig, CoreError> {
        let data = serde_json::to_value(&update).ok();
        self.audited_with(token, Operation::Update, "sys/rotate/config", data, async {
            let mut cfg = self.inner.barrier.rotation_config().await?;
            if let Some(max) = update.max_operations {
                cfg.max_operations = max;
            }
            if let Some(text) = &update.interval {
                let d = parse_duration(text)
                    .map_err(|e| CoreError::InvalidRequest(format!("interval: {e}")))?;
                cfg.interval = (!d.is_zero()).then_some(d);
            }
            if let Some(enabled) = update.enabled {
                cfg.enabled = enabled;
            }
            self.inner.barrier.set_rotation_config(cfg).await?;
            Ok(to_api(self.inner.barrier.rotation_config().await?))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_duration_never_panics(text in ".{0,40}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn formatted_durations_parse_back(secs in 0u64..10_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn durations_parse_and_format_like_go() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["", "h", "1x", "-5", "1h 2m", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h0m0s");
        assert_eq!(format_duration(Duration::from_secs(61)), "1m1s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
