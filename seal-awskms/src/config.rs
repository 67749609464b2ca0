//! [`AwsKmsConfig`]: Vault's `seal "awskms"` stanza, plus bounded timeouts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::AwsKmsError;

/// Region used when neither the configuration nor the environment names one,
/// as Vault does.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Default bound on establishing a TCP/TLS connection to KMS.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on one HTTP attempt (request sent to response read).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on a whole KMS call, retries and backoff included.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of attempts for a transient failure (the AWS SDK's
/// standard mode uses 3).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The keys [`AwsKmsConfig::from_map`] understands, listed in its error.
const KNOWN_KEYS: &[&str] = &[
    "region",
    "kms_key_id",
    "endpoint",
    "access_key",
    "secret_key",
    "session_token",
    "shared_creds_filename",
    "shared_creds_profile",
    "role_arn",
    "role_session_name",
    "web_identity_token_file",
    "disallow_env_vars",
    "disabled",
    "connect_timeout",
    "attempt_timeout",
    "operation_timeout",
    "max_attempts",
];

/// A string that is a credential: wiped on drop, never printed.
///
/// `Debug` and `Display` are deliberately absent from the value; `Debug`
/// prints `"[redacted]"` so configurations can be logged safely.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The credential itself. Every call site is a place it is used.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Configuration of the AWS KMS seal, mirroring Vault's `seal "awskms"`
/// stanza so an existing Vault configuration carries over.
///
/// Build it from the stanza with [`AwsKmsConfig::from_map`], then let the
/// environment override it as Vault does with [`AwsKmsConfig::apply_env`].
/// Credentials are optional: without `access_key`/`secret_key` the AWS
/// default chain is used (environment, shared credentials file/profile, web
/// identity, container and instance roles), resolved lazily on the first
/// KMS call.
///
/// `Debug` never shows `secret_key` or `session_token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsKmsConfig {
    /// AWS region of the key. Falls back to `AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, then [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// The KMS key: key id, key ARN, alias name (`alias/…`) or alias ARN.
    /// Required (here or through `VAULT_AWSKMS_SEAL_KEY_ID`).
    pub kms_key_id: Option<String>,
    /// KMS endpoint URL override (VPC endpoints, FIPS endpoints, tests).
    pub endpoint: Option<String>,
    /// Static access key id. Needs `secret_key`.
    pub access_key: Option<String>,
    /// Static secret access key.
    pub secret_key: Option<SecretString>,
    /// Session token for temporary static credentials.
    pub session_token: Option<SecretString>,
    /// Shared credentials file (default `~/.aws/credentials`).
    pub shared_creds_filename: Option<PathBuf>,
    /// Profile in the shared credentials/config files.
    pub shared_creds_profile: Option<String>,
    /// Role to assume (with `web_identity_token_file`: web identity / IRSA;
    /// alone: STS AssumeRole from the default credentials).
    pub role_arn: Option<String>,
    /// Session name for the assumed role.
    pub role_session_name: Option<String>,
    /// Web identity token file (Kubernetes IRSA). Needs `role_arn`.
    pub web_identity_token_file: Option<PathBuf>,
    /// When true, [`AwsKmsConfig::apply_env`] changes nothing (Vault's
    /// `disallow_env_vars`).
    pub disallow_env_vars: bool,
    /// Vault's `disabled`: the seal is configured only as the source of a
    /// seal migration. Carried for the server; the seal itself ignores it.
    pub disabled: bool,
    /// Bound on establishing a connection to KMS.
    pub connect_timeout: Duration,
    /// Bound on one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Bound on one KMS call including retries, so nothing hangs unbounded.
    pub operation_timeout: Duration,
    /// Attempts for transient failures (timeouts, connection errors,
    /// throttling, 5xx); other failures are never retried. At least 1.
    pub max_attempts: u32,
}

impl Default for AwsKmsConfig {
    fn default() -> Self {
        Self {
            region: None,
            kms_key_id: None,
            endpoint: None,
            access_key: None,
            secret_key: None,
            session_token: None,
            shared_creds_filename: None,
            shared_creds_profile: None,
            role_arn: None,
            role_session_name: None,
            web_identity_token_file: None,
            disallow_env_vars: false,
            disabled: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

impl AwsKmsConfig {
    /// Reads Vault's `seal "awskms"` stanza given as string attributes (the
    /// server passes the HCL block's attributes as they are).
    ///
    /// Besides Vault's keys it understands `connect_timeout`,
    /// `attempt_timeout`, `operation_timeout` (`"5s"`, `"500ms"` or plain
    /// seconds) and `max_attempts`. Empty values count as unset, as in Vault.
    ///
    /// # Errors
    /// [`AwsKmsError::Config`] for an unknown key (with the list of known
    /// ones), an unparsable boolean, duration or number, or an inconsistent
    /// combination (`access_key` without `secret_key`, `web_identity_token_file`
    /// without `role_arn`).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, AwsKmsError> {
        let mut cfg = Self::default();
        for (key, value) in map {
            let value = value.trim();
            let text = || (!value.is_empty()).then(|| value.to_owned());
            match key.as_str() {
                "region" => cfg.region = text(),
                "kms_key_id" => cfg.kms_key_id = text(),
                "endpoint" => cfg.endpoint = text(),
                "access_key" => cfg.access_key = text(),
                "secret_key" => cfg.secret_key = text().map(SecretString::from),
                "session_token" => cfg.session_token = text().map(SecretString::from),
                "shared_creds_filename" => cfg.shared_creds_filename = text().map(PathBuf::from),
                "shared_creds_profile" => cfg.shared_creds_profile = text(),
                "role_arn" => cfg.role_arn = text(),
                "role_session_name" => cfg.role_session_name = text(),
                "web_identity_token_file" => {
                    cfg.web_identity_token_file = text().map(PathBuf::from);
                }
                "disallow_env_vars" => cfg.disallow_env_vars = parse_bool(key, value)?,
                "disabled" => cfg.disabled = parse_bool(key, value)?,
                "connect_timeout" => cfg.connect_timeout = parse_duration(key, value)?,
                "attempt_timeout" => cfg.attempt_timeout = parse_duration(key, value)?,
                "operation_timeout" => cfg.operation_timeout = parse_duration(key, value)?,
                "max_attempts" => {
                    cfg.max_attempts = value.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        AwsKmsError::Config(format!(
                            "seal \"awskms\": max_attempts must be a whole number of at least 1, got {value:?}"
                        ))
                    })?;
                }
                other => {
                    return Err(AwsKmsError::Config(format!(
                        "seal \"awskms\": unknown setting {other:?}; known settings are: {}",
                        KNOWN_KEYS.join(", ")
                    )));
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies Vault's environment overrides from the process environment.
    ///
    /// See [`AwsKmsConfig::apply_env_with`] for the rules.
    pub fn apply_env(&mut self) {
        self.apply_env_with(|name| std::env::var(name).ok());
    }

    /// Applies Vault's environment overrides, reading variables through
    /// `lookup` (so tests need not touch the process environment).
    ///
    /// As Vault's awskms wrapper does: the key id from
    /// `AWSKMS_WRAPPER_KEY_ID`, else `VAULT_AWSKMS_SEAL_KEY_ID`, wins over the
    /// configured `kms_key_id`; the endpoint from `AWSKMS_ENDPOINT`, else the
    /// deprecated `AWS_KMS_ENDPOINT`, wins over `endpoint`; the region from
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`, is used only when no `region`
    /// is configured. With `disallow_env_vars` nothing changes. Empty
    /// variables count as unset. Credentials variables (`AWS_ACCESS_KEY_ID`
    /// …) are read by the AWS credentials chain, not here.
    pub fn apply_env_with(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if self.disallow_env_vars {
            return;
        }
        let first = |names: &[&str]| {
            names.iter().find_map(|n| {
                lookup(n)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
            })
        };
        if let Some(key) = first(&["AWSKMS_WRAPPER_KEY_ID", "VAULT_AWSKMS_SEAL_KEY_ID"]) {
            self.kms_key_id = Some(key);
        }
        if let Some(endpoint) = first(&["AWSKMS_ENDPOINT", "AWS_KMS_ENDPOINT"]) {
            self.endpoint = Some(endpoint);
        }
        if self.region.is_none() {
            self.region = first(&["AWS_REGION", "AWS_DEFAULT_REGION"]);
        }
    }

    /// The region the seal will use: the configured one or
    /// [`DEFAULT_REGION`].
    pub fn effective_region(&self) -> &str {
        self.region.as_deref().unwrap_or(DEFAULT_REGION)
    }

    /// Checks the combination of settings.
    ///
    /// # Errors
    /// [`AwsKmsError::Config`] naming the inconsistent settings.
    pub fn validate(&self) -> Result<(), AwsKmsError> {
        if self.access_key.is_some() != self.secret_key.is_some() {
            return Err(AwsKmsError::Config(
                "seal \"awskms\": access_key and secret_key must be set together".into(),
            ));
        }
        if self.session_token.is_some() && self.access_key.is_none() {
            return Err(AwsKmsError::Config(
                "seal \"awskms\": session_token needs access_key and secret_key".into(),
            ));
        }
        if self.web_identity_token_file.is_some() && self.role_arn.is_none() {
            return Err(AwsKmsError::Config(
                "seal \"awskms\": web_identity_token_file needs role_arn".into(),
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("operation_timeout", self.operation_timeout),
        ] {
            if d.is_zero() {
                return Err(AwsKmsError::Config(format!(
                    "seal \"awskms\": {name} must be greater than zero"
                )));
            }
        }
        if self.max_attempts == 0 {
            return Err(AwsKmsError::Config(
                "seal \"awskms\": max_attempts must be at least 1".into(),
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err(AwsKmsError::Config(format!(
                "seal \"awskms\": endpoint {endpoint:?} must be a URL starting with https:// or http://"
            )));
        }
        Ok(())
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, AwsKmsError> {
    // Go's strconv.ParseBool, which Vault uses for these settings.
    match value {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        other => Err(AwsKmsError::Config(format!(
            "seal \"awskms\": {key} must be true or false, got {other:?}"
        ))),
    }
}

fn parse_duration(key: &str, value: &str) -> Result<Duration, AwsKmsError> {
    let parsed = match value.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(value).map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(AwsKmsError::Config(format!(
            "seal \"awskms\": {key} must be greater than zero"
        ))),
        Err(e) => Err(AwsKmsError::Config(format!(
            "seal \"awskms\": {key} must be a duration such as \"5s\" or \"500ms\", got {value:?} ({e})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn vault_stanza_is_read() {
        let cfg = AwsKmsConfig::from_map(&map(&[
            ("region", "eu-west-1"),
            ("kms_key_id", "alias/vault"),
            ("endpoint", "https://kms.eu-west-1.amazonaws.com"),
            ("access_key", "AKIAEXAMPLE"),
            ("secret_key", "wJalrXUtnFEMI"),
            ("session_token", "FwoGZXIvYXdzE"),
            ("shared_creds_profile", "prod"),
            ("disabled", "false"),
            ("connect_timeout", "2s"),
            ("operation_timeout", "45"),
            ("attempt_timeout", "750ms"),
            ("max_attempts", "5"),
        ]))
        .unwrap();
        assert_eq!(cfg.region.as_deref(), Some("eu-west-1"));
        assert_eq!(cfg.kms_key_id.as_deref(), Some("alias/vault"));
        assert_eq!(
            cfg.secret_key.as_ref().unwrap().expose_secret(),
            "wJalrXUtnFEMI"
        );
        assert_eq!(cfg.connect_timeout, Duration::from_secs(2));
        assert_eq!(cfg.operation_timeout, Duration::from_secs(45));
        assert_eq!(cfg.attempt_timeout, Duration::from_millis(750));
        assert_eq!(cfg.max_attempts, 5);
        assert!(!cfg.disabled);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let cfg = AwsKmsConfig::from_map(&map(&[
            ("access_key", "AKIAVISIBLE"),
            ("secret_key", "very-secret-key-material"),
            ("session_token", "session-token-material"),
        ]))
        .unwrap();
        let printed = format!("{cfg:?} {cfg:#?}");
        assert!(!printed.contains("very-secret-key-material"), "{printed}");
        assert!(!printed.contains("session-token-material"), "{printed}");
        assert!(printed.contains("[redacted]"));
        // The access key id is an identifier, not a secret.
        assert!(printed.contains("AKIAVISIBLE"));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_known_list() {
        let err = AwsKmsConfig::from_map(&map(&[("kms_keyid", "x")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown setting \"kms_keyid\""), "{msg}");
        assert!(msg.contains("kms_key_id"), "{msg}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (pairs, needle) in [
            (vec![("disabled", "yes")], "disabled must be true or false"),
            (
                vec![("connect_timeout", "soon")],
                "connect_timeout must be a duration",
            ),
            (
                vec![("operation_timeout", "0s")],
                "operation_timeout must be greater than zero",
            ),
            (
                vec![("max_attempts", "0")],
                "max_attempts must be a whole number",
            ),
            (
                vec![("max_attempts", "-1")],
                "max_attempts must be a whole number",
            ),
            (
                vec![("access_key", "AKIA")],
                "access_key and secret_key must be set together",
            ),
            (
                vec![("secret_key", "s")],
                "access_key and secret_key must be set together",
            ),
            (
                vec![("session_token", "t")],
                "session_token needs access_key",
            ),
            (
                vec![("web_identity_token_file", "/var/run/token")],
                "needs role_arn",
            ),
            (vec![("endpoint", "kms.local:4566")], "must be a URL"),
        ] {
            let err = AwsKmsConfig::from_map(&map(&pairs)).unwrap_err();
            assert!(err.to_string().contains(needle), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let cfg = AwsKmsConfig::from_map(&map(&[("region", ""), ("kms_key_id", " ")])).unwrap();
        assert_eq!(cfg.region, None);
        assert_eq!(cfg.kms_key_id, None);
        assert_eq!(cfg.effective_region(), DEFAULT_REGION);
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn env_overrides_follow_vault() {
        let mut cfg = AwsKmsConfig {
            kms_key_id: Some("from-config".into()),
            endpoint: Some("https://config.invalid".into()),
            ..AwsKmsConfig::default()
        };
        cfg.apply_env_with(env(&[
            ("VAULT_AWSKMS_SEAL_KEY_ID", "from-vault-env"),
            ("AWS_KMS_ENDPOINT", "http://127.0.0.1:4566"),
            ("AWS_DEFAULT_REGION", "ap-south-1"),
        ]));
        assert_eq!(cfg.kms_key_id.as_deref(), Some("from-vault-env"));
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(cfg.region.as_deref(), Some("ap-south-1"));

        // The wrapper's own variables win over the Vault-prefixed ones; a
        // configured region wins over the environment.
        let mut cfg = AwsKmsConfig {
            region: Some("eu-central-1".into()),
            ..AwsKmsConfig::default()
        };
        cfg.apply_env_with(env(&[
            ("AWSKMS_WRAPPER_KEY_ID", "wrapper"),
            ("VAULT_AWSKMS_SEAL_KEY_ID", "vault"),
            ("AWSKMS_ENDPOINT", "http://new.invalid"),
            ("AWS_KMS_ENDPOINT", "http://old.invalid"),
            ("AWS_REGION", "us-west-2"),
            ("AWS_DEFAULT_REGION", "ap-south-1"),
        ]));
        assert_eq!(cfg.kms_key_id.as_deref(), Some("wrapper"));
        assert_eq!(cfg.endpoint.as_deref(), Some("http://new.invalid"));
        assert_eq!(cfg.region.as_deref(), Some("eu-central-1"));

        // AWS_REGION wins over AWS_DEFAULT_REGION; empty variables are unset.
        let mut cfg = AwsKmsConfig::default();
        cfg.apply_env_with(env(&[
            ("VAULT_AWSKMS_SEAL_KEY_ID", ""),
            ("AWS_REGION", "us-west-2"),
            ("AWS_DEFAULT_REGION", "ap-south-1"),
        ]));
        assert_eq!(cfg.kms_key_id, None);
        assert_eq!(cfg.region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn disallow_env_vars_ignores_the_environment() {
        let mut cfg =
            AwsKmsConfig::from_map(&map(&[("kms_key_id", "k"), ("disallow_env_vars", "true")]))
                .unwrap();
        cfg.apply_env_with(env(&[
            ("VAULT_AWSKMS_SEAL_KEY_ID", "env"),
            ("AWS_REGION", "us-west-2"),
        ]));
        assert_eq!(cfg.kms_key_id.as_deref(), Some("k"));
        assert_eq!(cfg.region, None);
    }
}
