//! [`ConsulConfig`]: Vault's `storage "consul"` stanza, parsed and checked.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::ConsulError;

/// Consul's default `kv_max_value_size` and `txn_max_req_len`: 512 KiB
/// (raft's suggested maximum entry size).
pub const CONSUL_DEFAULT_MAX_SIZE: usize = 512 * 1024;

/// A Consul ACL token. Zeroized on drop; `Debug` prints no characters of it.
#[derive(Clone)]
pub struct ConsulToken(Zeroizing<String>);

impl ConsulToken {
    /// Wraps a token secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// The secret, for the `X-Consul-Token` header only.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConsulToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsulToken(<redacted>)")
    }
}

/// `http` or `https` towards the Consul agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// Plain HTTP (Consul's default on port 8500).
    #[default]
    Http,
    /// HTTPS (Consul's `ports.https`).
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// How reads are served (Vault's `consistency_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsistencyMode {
    /// Consul's default mode: the leader answers from its state without a
    /// quorum round; a deposed leader may answer stale for a moment.
    #[default]
    Default,
    /// `?consistent`: the leader confirms its leadership with a quorum before
    /// answering. Slower, never stale.
    Strong,
}

/// Lowest TLS version accepted towards Consul (Vault's `tls_min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMinVersion {
    /// TLS 1.2 (Vault's default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Settings of the Consul storage backend.
///
/// Field names follow Vault's `storage "consul"` stanza so an existing
/// configuration carries over; [`ConsulConfig::from_map`] reads that stanza.
/// The few settings Vault lacks (`lock_delay`, `request_timeout`,
/// `max_retries`, `kv_max_value_size`, `txn_max_req_len`) are marked so.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsulConfig {
    /// `host:port` of the Consul agent (default `127.0.0.1:8500`).
    pub address: String,
    /// `http` or `https` (an `address` with a scheme sets it).
    pub scheme: Scheme,
    /// Key prefix for every entry; always ends in `/` (default `vault/`).
    pub path: String,
    /// ACL token sent as `X-Consul-Token` (`token`, or `CONSUL_HTTP_TOKEN`).
    pub token: Option<ConsulToken>,
    /// Most requests in flight to Consul at once (default 128). Enforced,
    /// unlike Vault, which parses it and then ignores it.
    pub max_parallel: usize,
    /// Read consistency (default [`ConsistencyMode::Default`]).
    pub consistency_mode: ConsistencyMode,
    /// TTL of the HA lock session (default 15 s, 1 s..=24 h; the Consul
    /// servers refuse TTLs below their `session_ttl_min`, 10 s by default).
    /// A crashed holder's lock is freed after up to twice the TTL (Consul's
    /// reaping) plus `lock_delay`.
    pub session_ttl: Duration,
    /// How long one HA lock attempt waits for a held lock to come free
    /// before returning to the caller (default 15 s). A release wakes the
    /// waiter at once, whatever this is.
    pub lock_wait_time: Duration,
    /// Session lock-delay (default 15 s, Consul's; 0..=60 s): after a
    /// holder's session is invalidated (not after a clean release), nobody
    /// may take the lock for this long, giving a paused old holder time to
    /// notice. Lower it for faster takeover after a crash; fencing already
    /// stops a deposed holder's writes. Not in Vault: there it is always
    /// Consul's 15 s.
    pub lock_delay: Duration,
    /// Dead-leader detection (`dead_leader_detection`,
    /// `dead_leader_probe_interval`, `dead_leader_probe_window`; not in
    /// Vault): how a standby frees the lock of an active node whose process
    /// is gone without waiting for its session TTL.
    pub dead_leader: DeadLeaderConfig,
    /// PEM CA bundle that signs the agent's certificate. When set, only
    /// these CAs are trusted.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for agents with `verify_incoming`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only: it allows anyone on
    /// the path to read and forge storage traffic.
    pub tls_skip_verify: bool,
    /// Lowest TLS version (default TLS 1.2).
    pub tls_min_version: TlsMinVersion,
    /// Per-attempt request timeout (default 30 s; not in Vault).
    pub request_timeout: Duration,
    /// Retries of a transient failure before giving up (default 4; not in
    /// Vault). Backoff doubles from 50 ms up to 2 s, with jitter.
    pub max_retries: u32,
    /// The servers' `limits.kv_max_value_size` (default 512 KiB; not in
    /// Vault). Set it only if the Consul servers were configured so.
    pub kv_max_value_size: usize,
    /// The servers' `limits.txn_max_req_len` (default 512 KiB; not in
    /// Vault). Consul raises it to `kv_max_value_size` when that is larger.
    pub txn_max_req_len: usize,
    /// Vault's generic `ha_enabled` (default true for Consul): whether the
    /// server should use this backend for HA.
    pub ha_enabled: bool,
    /// Vault's generic `redirect_addr`, kept for the server.
    pub redirect_addr: Option<String>,
    /// Vault's generic `cluster_addr`, kept for the server.
    pub cluster_addr: Option<String>,
    /// Vault's Consul service registration settings (`service`,
    /// `service_tags`, `service_address`, `check_timeout`,
    /// `disable_registration`), read from the same stanza as Vault does.
    pub registration: RegistrationConfig,
    /// Settings accepted for compatibility but not acted on, with the
    /// reason; the backend logs them once at start.
    pub ignored: Vec<(String, &'static str)>,
}

/// Dead-leader detection: a standby that finds the lock holder's
/// advertised `api_addr` **refusing connections** (nothing listens there:
/// the process is gone) on every probe over `probe_window`, after that
/// address had answered it before (one that never answered may be a wrong
/// `api_addr` of a live node), and the lock
/// still held by the same session, destroys that session instead of
/// waiting up to twice `session_ttl` for Consul to expire it; Consul then
/// applies `lock_delay` and a standby takes the lock. A timeout is never
/// taken for death (a paused process still accepts into its backlog, and
/// a partition times out): those wait for the TTL as before. Safe even if
/// the holder is alive after all: its writes are fenced on the destroyed
/// session and fail, and it steps down.
///
/// A node that finds the lock held by a session advertising its own
/// `api_addr` (its previous process, killed) destroys it at once, once per
/// start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLeaderConfig {
    /// `dead_leader_detection` (default true).
    pub enabled: bool,
    /// `dead_leader_probe_interval`: time between two TCP connection
    /// attempts to the holder's `api_addr`, and the longest one attempt
    /// may take (default 250 ms, 10 ms..=10 s).
    pub probe_interval: Duration,
    /// `dead_leader_probe_window`: how long every probe must have been
    /// refused (and at least three of them) before the session is
    /// destroyed (default 1 s, at least twice the interval, at most 1 min).
    pub probe_window: Duration,
}

impl Default for DeadLeaderConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            probe_interval: Duration::from_millis(250),
            probe_window: Duration::from_secs(1),
        }
    }
}

/// Settings of the Consul service registration (Vault's
/// `service_registration "consul"`, or the same keys in `storage "consul"`),
/// for [`crate::ConsulServiceRegistration`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistrationConfig {
    /// Turns registration off (`disable_registration`, default false).
    pub disable_registration: bool,
    /// The Consul service name (`service`, default `vault`).
    pub service: String,
    /// Extra tags (`service_tags`, comma-separated; trimmed, deduplicated,
    /// sorted), before `active`/`standby` and `initialized`.
    pub service_tags: Vec<String>,
    /// The address registered for the service (`service_address`); `None`
    /// registers the host of the node's `api_addr`, and `Some("")` lets
    /// Consul use the node's address.
    pub service_address: Option<String>,
    /// TTL of the "Vault Sealed Status" check (`check_timeout`, default
    /// 5 s, at least 100 ms); the node pushes it every half of that.
    pub check_timeout: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            disable_registration: false,
            service: "vault".to_owned(),
            service_tags: Vec::new(),
            service_address: None,
            check_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:8500".to_owned(),
            scheme: Scheme::Http,
            path: "vault/".to_owned(),
            token: None,
            max_parallel: 128,
            consistency_mode: ConsistencyMode::Default,
            session_ttl: Duration::from_secs(15),
            lock_wait_time: Duration::from_secs(15),
            lock_delay: Duration::from_secs(15),
            dead_leader: DeadLeaderConfig::default(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_skip_verify: false,
            tls_min_version: TlsMinVersion::Tls12,
            request_timeout: Duration::from_secs(30),
            max_retries: 4,
            kv_max_value_size: CONSUL_DEFAULT_MAX_SIZE,
            txn_max_req_len: CONSUL_DEFAULT_MAX_SIZE,
            ha_enabled: true,
            redirect_addr: None,
            cluster_addr: None,
            registration: RegistrationConfig::default(),
            ignored: Vec::new(),
        }
    }
}

impl ConsulConfig {
    /// A configuration for the agent at `address` (`host:port` or
    /// `http(s)://host:port`) with every other setting at its default.
    ///
    /// # Errors
    /// [`ConsulError::Config`] for a malformed address.
    pub fn with_address(address: &str) -> Result<Self, ConsulError> {
        let mut config = Self::default();
        config.set_address(address)?;
        Ok(config)
    }

    /// Reads Vault's `storage "consul"` stanza given as string key/values,
    /// falling back to `CONSUL_HTTP_ADDR` and `CONSUL_HTTP_TOKEN` from the
    /// environment as Vault does (the stanza wins).
    ///
    /// # Errors
    /// [`ConsulError::Config`] naming the key for an unknown key or a value
    /// that does not parse or is out of range.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, ConsulError> {
        Self::from_map_with_env(map, |name| std::env::var(name).ok())
    }

    /// [`ConsulConfig::from_map`] with an explicit environment lookup, so
    /// callers and tests need not touch the process environment.
    ///
    /// # Errors
    /// As [`ConsulConfig::from_map`].
    pub fn from_map_with_env(
        map: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConsulError> {
        let mut c = Self::default();
        if let Some(addr) = env("CONSUL_HTTP_ADDR").filter(|a| !a.is_empty()) {
            c.set_address(&addr)?;
        }
        if let Some(token) = env("CONSUL_HTTP_TOKEN").filter(|t| !t.is_empty()) {
            c.token = Some(ConsulToken::new(token));
        }
        // `scheme` applies after `address`, whatever the map order, unless
        // the address itself names a scheme.
        let mut explicit_scheme = None;
        for (key, value) in map {
            let v = value.trim();
            match key.as_str() {
                "address" => c.set_address(v)?,
                "scheme" => {
                    explicit_scheme = Some(match v {
                        "http" => Scheme::Http,
                        "https" => Scheme::Https,
                        _ => return Err(ConsulError::config(key, "must be \"http\" or \"https\"")),
                    });
                }
                "path" => c.path = normalize_path(v)?,
                "token" => {
                    c.token = (!value.is_empty()).then(|| ConsulToken::new(value.as_str()));
                }
                "max_parallel" => {
                    c.max_parallel = parse_number(key, v, 1, 4096)?;
                }
                "consistency_mode" => {
                    c.consistency_mode = match v {
                        "default" => ConsistencyMode::Default,
                        "strong" => ConsistencyMode::Strong,
                        _ => {
                            return Err(ConsulError::config(
                                key,
                                "must be \"default\" or \"strong\"",
                            ));
                        }
                    };
                }
                "session_ttl" => {
                    c.session_ttl = parse_duration_in(key, v, Duration::from_secs(1), DAY)?;
                }
                "lock_wait_time" => {
                    c.lock_wait_time = parse_duration_in(key, v, Duration::ZERO, DAY)?;
                }
                "lock_delay" => {
                    c.lock_delay = parse_duration_in(key, v, Duration::ZERO, MINUTE)?;
                }
                "dead_leader_detection" => c.dead_leader.enabled = parse_bool(key, v)?,
                "dead_leader_probe_interval" => {
                    c.dead_leader.probe_interval = parse_duration_in(
                        key,
                        v,
                        Duration::from_millis(10),
                        Duration::from_secs(10),
                    )?;
                }
                "dead_leader_probe_window" => {
                    c.dead_leader.probe_window =
                        parse_duration_in(key, v, Duration::from_millis(20), MINUTE)?;
                }
                "tls_ca_file" => c.tls_ca_file = non_empty_path(v),
                "tls_cert_file" => c.tls_cert_file = non_empty_path(v),
                "tls_key_file" => c.tls_key_file = non_empty_path(v),
                "tls_skip_verify" => c.tls_skip_verify = parse_bool(key, v)?,
                "tls_min_version" => {
                    c.tls_min_version = match v {
                        "tls12" | "" => TlsMinVersion::Tls12,
                        "tls13" => TlsMinVersion::Tls13,
                        "tls10" | "tls11" => {
                            return Err(ConsulError::config(
                                key,
                                "TLS 1.0 and 1.1 are not supported (broken protocols); use \"tls12\" or \"tls13\"",
                            ));
                        }
                        _ => {
                            return Err(ConsulError::config(key, "must be \"tls12\" or \"tls13\""));
                        }
                    };
                }
                "request_timeout" => {
                    c.request_timeout = parse_duration_in(
                        key,
                        v,
                        Duration::from_millis(1),
                        Duration::from_secs(600),
                    )?;
                }
                "max_retries" => c.max_retries = parse_number(key, v, 0, 20)?,
                "kv_max_value_size" => {
                    c.kv_max_value_size = parse_number(key, v, 1024, 64 * 1024 * 1024)?;
                }
                "txn_max_req_len" => {
                    c.txn_max_req_len = parse_number(key, v, 16 * 1024, 64 * 1024 * 1024)?;
                }
                "ha_enabled" => c.ha_enabled = parse_bool(key, v)?,
                "redirect_addr" => c.redirect_addr = Some(v.to_owned()),
                "cluster_addr" => c.cluster_addr = Some(v.to_owned()),
                "disable_clustering" => {
                    parse_bool(key, v)?;
                    c.ignored.push((
                        key.clone(),
                        "request forwarding is configured on the server",
                    ));
                }
                "disable_registration" => {
                    c.registration.disable_registration = parse_bool(key, v)?;
                }
                "service" => c.registration.service = parse_service_name(v)?,
                "service_tags" => c.registration.service_tags = parse_tags(v),
                "service_address" => c.registration.service_address = Some(v.to_owned()),
                "check_timeout" => {
                    c.registration.check_timeout = parse_duration_in(
                        key,
                        v,
                        Duration::from_millis(100),
                        Duration::from_secs(3600),
                    )?;
                }
                "service_meta" => {
                    c.ignored.push((
                        key.clone(),
                        "service_meta is not supported yet; the registration carries external-source=vault only",
                    ));
                }
                _ => {
                    return Err(ConsulError::config(
                        key,
                        format!("unknown setting; accepted: {}", KNOWN_KEYS.join(", ")),
                    ));
                }
            }
        }
        if let Some(scheme) = explicit_scheme {
            let address_has_scheme = map.get("address").is_some_and(|a| a.contains("://"));
            if !address_has_scheme {
                c.scheme = scheme;
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks the combination of settings.
    ///
    /// # Errors
    /// [`ConsulError::Config`] naming the setting at fault.
    pub fn validate(&self) -> Result<(), ConsulError> {
        normalize_path(&self.path)?;
        if self.max_parallel == 0 {
            return Err(ConsulError::config("max_parallel", "must be at least 1"));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConsulError::config(
                "tls_cert_file",
                "tls_cert_file and tls_key_file must be set together",
            ));
        }
        if self.session_ttl < Duration::from_secs(1) || self.session_ttl > DAY {
            return Err(ConsulError::config(
                "session_ttl",
                "must be between 1s and 24h (and at least the Consul servers' session_ttl_min, 10s unless lowered)",
            ));
        }
        if self.lock_wait_time > DAY {
            return Err(ConsulError::config("lock_wait_time", "must be at most 24h"));
        }
        if self.lock_delay > MINUTE {
            return Err(ConsulError::config(
                "lock_delay",
                "Consul allows at most 60s",
            ));
        }
        let probes = self.dead_leader;
        if probes.probe_interval < Duration::from_millis(10)
            || probes.probe_interval > Duration::from_secs(10)
        {
            return Err(ConsulError::config(
                "dead_leader_probe_interval",
                "must be between 10ms and 10s",
            ));
        }
        if probes.probe_window < probes.probe_interval * 2 || probes.probe_window > MINUTE {
            return Err(ConsulError::config(
                "dead_leader_probe_window",
                "must be at least twice dead_leader_probe_interval and at most 1m",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConsulError::config("request_timeout", "must be positive"));
        }
        Ok(())
    }

    /// `scheme://address`, the base every request URL starts with.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.address)
    }

    fn set_address(&mut self, value: &str) -> Result<(), ConsulError> {
        let (scheme, rest) = match value.split_once("://") {
            Some(("http", rest)) => (Some(Scheme::Http), rest),
            Some(("https", rest)) => (Some(Scheme::Https), rest),
            Some(("unix", _)) => {
                return Err(ConsulError::config(
                    "address",
                    "unix sockets are not supported; give host:port",
                ));
            }
            Some(_) => {
                return Err(ConsulError::config(
                    "address",
                    "scheme must be http:// or https://",
                ));
            }
            None => (None, value),
        };
        let rest = rest.trim_end_matches('/');
        let valid = !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@', ' '])
            && rest.rsplit_once(':').is_none_or(|(host, port)| {
                !host.is_empty()
                    && (port.parse::<u16>().is_ok() || host.ends_with(']') && port.is_empty())
            });
        if !valid {
            return Err(ConsulError::config(
                "address",
                format!("{value:?} is not host:port (for example 127.0.0.1:8500)"),
            ));
        }
        self.address = rest.to_owned();
        if let Some(scheme) = scheme {
            self.scheme = scheme;
        }
        Ok(())
    }
}

const KNOWN_KEYS: &[&str] = &[
    "address",
    "scheme",
    "path",
    "token",
    "max_parallel",
    "consistency_mode",
    "session_ttl",
    "lock_wait_time",
    "lock_delay",
    "dead_leader_detection",
    "dead_leader_probe_interval",
    "dead_leader_probe_window",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_skip_verify",
    "tls_min_version",
    "request_timeout",
    "max_retries",
    "kv_max_value_size",
    "txn_max_req_len",
    "ha_enabled",
    "redirect_addr",
    "cluster_addr",
    "disable_clustering",
    "disable_registration",
    "service",
    "service_tags",
    "service_meta",
    "service_address",
    "check_timeout",
];

const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn non_empty_path(v: &str) -> Option<PathBuf> {
    (!v.is_empty()).then(|| PathBuf::from(v))
}

/// Vault's path rules: a leading `/` is trimmed, a trailing `/` added. The
/// result must be a valid storage prefix so keys under it stay valid.
fn normalize_path(v: &str) -> Result<String, ConsulError> {
    let trimmed = v.trim_start_matches('/');
    if trimmed.is_empty() {
        return Err(ConsulError::config(
            "path",
            "must not be empty: Strongroom keeps its keys under a prefix of their own (default \"vault/\")",
        ));
    }
    let path = if trimmed.ends_with('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/")
    };
    seal_core::validate_prefix(&path)
        .map_err(|e| ConsulError::config("path", format!("{path:?}: {e}")))?;
    Ok(path)
}

/// A Consul service name: what DNS (`<tag>.<service>.service.consul`)
/// can carry — ASCII letters, digits and dashes.
fn parse_service_name(v: &str) -> Result<String, ConsulError> {
    let valid =
        !v.is_empty() && v.len() <= 63 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(ConsulError::config(
            "service",
            format!(
                "{v:?} is not a usable Consul service name (1-63 ASCII letters, digits or dashes, as DNS needs)"
            ),
        ));
    }
    Ok(v.to_owned())
}

/// Vault's `service_tags`: comma-separated, trimmed, empty ones dropped,
/// deduplicated and sorted.
fn parse_tags(v: &str) -> Vec<String> {
    let tags: std::collections::BTreeSet<String> = v
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    tags.into_iter().collect()
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ConsulError> {
    // Go's strconv.ParseBool, which Vault uses.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(ConsulError::config(key, format!("{v:?} is not a boolean"))),
    }
}

fn parse_number<T>(key: &str, v: &str, min: T, max: T) -> Result<T, ConsulError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let n: T = v
        .parse()
        .map_err(|_| ConsulError::config(key, format!("{v:?} is not a whole number")))?;
    if n < min || n > max {
        return Err(ConsulError::config(
            key,
            format!("{n} is out of range {min}..={max}"),
        ));
    }
    Ok(n)
}

fn parse_duration_in(
    key: &str,
    v: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConsulError> {
    let d = parse_duration(v).ok_or_else(|| {
        ConsulError::config(
            key,
            format!("{v:?} is not a duration (for example \"15s\", \"1m30s\", \"500ms\" or a number of seconds)"),
        )
    })?;
    if d < min || d > max {
        return Err(ConsulError::config(
            key,
            format!("{d:?} is out of range {min:?}..={max:?}"),
        ));
    }
    Ok(d)
}

/// Parses a duration the way Vault's `parseutil.ParseDurationSecond` does:
/// a bare number is seconds, otherwise Go's `time.ParseDuration` syntax
/// (`1h30m`, `1.5s`, `250ms`, `10us`, `5ns`). Negative durations are refused.
pub fn parse_duration(input: &str) -> Option<Duration> {
    let s = input.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok().map(Duration::from_secs);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        if number.is_empty() || number == "." {
            return None;
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return None;
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        total = total.checked_add(whole.checked_mul(unit_nanos)?)?;
        let mut scale = unit_nanos;
        for digit in frac.bytes().take(30) {
            scale /= 10;
            total = total.checked_add(u128::from(digit - b'0') * scale)?;
        }
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    let nanos = u32::try_from(total % 1_000_000_000).ok()?;
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_match_vault() {
        let c = ConsulConfig::from_map_with_env(&BTreeMap::new(), no_env).unwrap();
        assert_eq!(c.address, "127.0.0.1:8500");
        assert_eq!(c.scheme, Scheme::Http);
        assert_eq!(c.path, "vault/");
        assert!(c.token.is_none());
        assert_eq!(c.max_parallel, 128);
        assert_eq!(c.consistency_mode, ConsistencyMode::Default);
        assert_eq!(c.session_ttl, Duration::from_secs(15));
        assert_eq!(c.lock_wait_time, Duration::from_secs(15));
        assert_eq!(c.tls_min_version, TlsMinVersion::Tls12);
        assert!(c.ha_enabled);
        assert_eq!(c.base_url(), "http://127.0.0.1:8500");
    }

    #[test]
    fn full_stanza_parses() {
        let c = ConsulConfig::from_map_with_env(
            &map(&[
                ("address", "consul.internal:8501"),
                ("scheme", "https"),
                ("path", "/strongroom"),
                ("token", "s3cr3t-token"),
                ("max_parallel", "16"),
                ("consistency_mode", "strong"),
                ("session_ttl", "10s"),
                ("lock_wait_time", "1m30s"),
                ("lock_delay", "2.5s"),
                ("tls_ca_file", "/etc/consul/ca.pem"),
                ("tls_cert_file", "/etc/consul/client.pem"),
                ("tls_key_file", "/etc/consul/client-key.pem"),
                ("tls_skip_verify", "false"),
                ("tls_min_version", "tls13"),
                ("request_timeout", "5"),
                ("max_retries", "2"),
                ("ha_enabled", "true"),
                ("redirect_addr", "https://10.0.0.1:8200"),
                ("cluster_addr", "https://10.0.0.1:8201"),
                ("service", "vault"),
                ("service_tags", "a,b"),
                ("check_timeout", "5s"),
            ]),
            no_env,
        )
        .unwrap();
        assert_eq!(c.base_url(), "https://consul.internal:8501");
        assert_eq!(c.path, "strongroom/");
        assert_eq!(c.token.as_ref().unwrap().expose_secret(), "s3cr3t-token");
        assert_eq!(c.max_parallel, 16);
        assert_eq!(c.consistency_mode, ConsistencyMode::Strong);
        assert_eq!(c.session_ttl, Duration::from_secs(10));
        assert_eq!(c.lock_wait_time, Duration::from_secs(90));
        assert_eq!(c.lock_delay, Duration::from_millis(2500));
        assert_eq!(
            c.tls_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/consul/ca.pem"))
        );
        assert_eq!(c.tls_min_version, TlsMinVersion::Tls13);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.max_retries, 2);
        assert_eq!(c.redirect_addr.as_deref(), Some("https://10.0.0.1:8200"));
        assert!(c.ignored.is_empty(), "{:?}", c.ignored);
        assert_eq!(c.registration.service, "vault");
        assert_eq!(c.registration.service_tags, ["a", "b"]);
        assert_eq!(c.registration.check_timeout, Duration::from_secs(5));
    }

    #[test]
    fn registration_settings_parse() {
        let c = ConsulConfig::from_map_with_env(&BTreeMap::new(), no_env).unwrap();
        assert_eq!(c.registration, RegistrationConfig::default());
        assert_eq!(c.registration.service, "vault");
        assert_eq!(c.registration.check_timeout, Duration::from_secs(5));
        let c = ConsulConfig::from_map_with_env(
            &map(&[
                ("service", "secrets-prod"),
                ("service_tags", " z, a ,,a,m "),
                ("service_address", "10.1.2.3"),
                ("check_timeout", "750ms"),
                ("disable_registration", "true"),
                ("service_meta", "x"),
            ]),
            no_env,
        )
        .unwrap();
        let r = &c.registration;
        assert_eq!(r.service, "secrets-prod");
        assert_eq!(r.service_tags, ["a", "m", "z"]);
        assert_eq!(r.service_address.as_deref(), Some("10.1.2.3"));
        assert_eq!(r.check_timeout, Duration::from_millis(750));
        assert!(r.disable_registration);
        let ignored: Vec<&str> = c.ignored.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(ignored, ["service_meta"]);
        let empty =
            ConsulConfig::from_map_with_env(&map(&[("service_address", "")]), no_env).unwrap();
        assert_eq!(empty.registration.service_address.as_deref(), Some(""));
    }

    #[test]
    fn ha_settings_parse_and_are_checked() {
        let c = ConsulConfig::from_map_with_env(
            &map(&[
                ("session_ttl", "1s"),
                ("lock_wait_time", "250ms"),
                ("lock_delay", "0"),
            ]),
            no_env,
        )
        .unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(1));
        assert_eq!(c.lock_wait_time, Duration::from_millis(250));
        assert_eq!(c.lock_delay, Duration::ZERO);
        assert_eq!(
            ConsulConfig::default().lock_delay,
            Duration::from_secs(15),
            "Consul's and Vault's default"
        );
        let bad = ConsulConfig {
            session_ttl: Duration::from_millis(10),
            ..ConsulConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("session_ttl")
        );
    }

    #[test]
    fn dead_leader_detection_is_on_by_default_and_tunable() {
        let d = ConsulConfig::default().dead_leader;
        assert!(d.enabled);
        assert_eq!(d.probe_interval, Duration::from_millis(250));
        assert_eq!(d.probe_window, Duration::from_secs(1));
        let c = ConsulConfig::from_map_with_env(
            &map(&[
                ("dead_leader_detection", "false"),
                ("dead_leader_probe_interval", "100ms"),
                ("dead_leader_probe_window", "500ms"),
            ]),
            no_env,
        )
        .unwrap();
        assert!(!c.dead_leader.enabled);
        assert_eq!(c.dead_leader.probe_interval, Duration::from_millis(100));
        assert_eq!(c.dead_leader.probe_window, Duration::from_millis(500));
        for (key, value) in [
            ("dead_leader_detection", "maybe"),
            ("dead_leader_probe_interval", "1ms"),
            ("dead_leader_probe_interval", "1m"),
            ("dead_leader_probe_window", "2h"),
            // Shorter than twice the default interval.
            ("dead_leader_probe_window", "300ms"),
        ] {
            let err = ConsulConfig::from_map_with_env(&map(&[(key, value)]), no_env).unwrap_err();
            assert!(
                err.to_string().contains("dead_leader"),
                "{key}={value}: {err}"
            );
        }
    }

    #[test]
    fn token_never_in_debug() {
        let c = ConsulConfig::from_map_with_env(&map(&[("token", "very-secret-token")]), no_env)
            .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
    }

    #[test]
    fn address_with_scheme_wins_over_scheme_key() {
        let c = ConsulConfig::from_map_with_env(
            &map(&[("address", "https://127.0.0.1:8501/"), ("scheme", "http")]),
            no_env,
        )
        .unwrap();
        assert_eq!(c.base_url(), "https://127.0.0.1:8501");
        let c =
            ConsulConfig::from_map_with_env(&map(&[("address", "[::1]:8500")]), no_env).unwrap();
        assert_eq!(c.base_url(), "http://[::1]:8500");
    }

    #[test]
    fn environment_is_a_fallback() {
        let env = |name: &str| match name {
            "CONSUL_HTTP_ADDR" => Some("https://10.1.1.1:8501".to_owned()),
            "CONSUL_HTTP_TOKEN" => Some("env-token".to_owned()),
            _ => None,
        };
        let c = ConsulConfig::from_map_with_env(&BTreeMap::new(), env).unwrap();
        assert_eq!(c.base_url(), "https://10.1.1.1:8501");
        assert_eq!(c.token.as_ref().unwrap().expose_secret(), "env-token");
        let c = ConsulConfig::from_map_with_env(
            &map(&[("address", "127.0.0.1:9500"), ("token", "stanza-token")]),
            env,
        )
        .unwrap();
        assert_eq!(c.address, "127.0.0.1:9500");
        assert_eq!(c.token.as_ref().unwrap().expose_secret(), "stanza-token");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("addresss", "127.0.0.1:8500"),
            ("address", "unix:///var/run/consul.sock"),
            ("address", "ftp://x:1"),
            ("address", "host:notaport"),
            ("address", ""),
            ("scheme", "gopher"),
            ("path", "/"),
            ("path", "a//b"),
            ("max_parallel", "0"),
            ("max_parallel", "-1"),
            ("max_parallel", "many"),
            ("consistency_mode", "eventual"),
            ("session_ttl", "soon"),
            ("session_ttl", "-5s"),
            ("session_ttl", "48h"),
            ("lock_delay", "61s"),
            ("tls_skip_verify", "yes please"),
            ("tls_min_version", "tls10"),
            ("tls_min_version", "ssl3"),
            ("max_retries", "100"),
            ("session_ttl", "500ms"),
            ("lock_wait_time", "2d"),
            ("lock_wait_time", "-1s"),
            ("lock_delay", "-1s"),
            ("check_timeout", "50ms"),
            ("check_timeout", "forever"),
            ("disable_registration", "nope"),
            ("service", ""),
            ("service", "vault.prod"),
            ("service", "väult"),
        ] {
            let err = ConsulConfig::from_map_with_env(&map(&[(key, value)]), no_env)
                .expect_err(&format!("{key}={value} accepted"));
            match &err {
                ConsulError::Config { key: k, .. } => assert_eq!(k, key, "{err}"),
                other => panic!("{key}={value}: {other}"),
            }
        }
        let err = ConsulConfig::from_map_with_env(&map(&[("tls_cert_file", "/c.pem")]), no_env)
            .unwrap_err();
        assert!(err.to_string().contains("tls_key_file"), "{err}");
        let err = ConsulConfig::from_map_with_env(&map(&[("adress", "x:1")]), no_env).unwrap_err();
        assert!(err.to_string().contains("unknown setting"), "{err}");
        assert!(err.to_string().contains("address"), "{err}");
    }

    #[test]
    fn durations_follow_vault() {
        let cases = [
            ("15", Duration::from_secs(15)),
            ("15s", Duration::from_secs(15)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("250ms", Duration::from_millis(250)),
            ("2h", Duration::from_secs(7200)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            (".5s", Duration::from_millis(500)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Some(want), "{text}");
        }
        for bad in ["", "s", "1x", "-1s", "1.2.3s", "1 s", "ms", "1s2"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn duration_round_trips_millis(ms in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Some(Duration::from_millis(ms)));
        }

        #[test]
        fn from_map_never_panics(key in "[a-z_]{1,20}", value in "\\PC{0,40}") {
            let mut m = BTreeMap::new();
            m.insert(key, value);
            let _ = ConsulConfig::from_map_with_env(&m, no_env);
        }

        #[test]
        fn ha_and_registration_values_never_panic(
            key in proptest::sample::select(vec![
                "session_ttl", "lock_wait_time", "lock_delay", "check_timeout",
                "service", "service_tags", "service_address", "disable_registration",
            ]),
            value in "\\PC{0,40}|[0-9]{1,25}(ns|us|ms|s|m|h)?|[0-9.]{1,10}s",
        ) {
            let mut m = BTreeMap::new();
            m.insert(key.to_owned(), value);
            if let Ok(c) = ConsulConfig::from_map_with_env(&m, no_env) {
                prop_assert!(c.validate().is_ok());
            }
        }
    }
}
