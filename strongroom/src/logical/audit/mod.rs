//! Audit devices: every request and response written to each enabled
//! device before the client sees a result, failing closed.
//!
//! # Behaviour
//! * No device enabled: nothing is logged and requests run.
//! * One or more: the request entry is written to every device (in
//!   parallel) after the ACL check and *before* the backend runs; if no
//!   device recorded it, the request is refused with 500 and nothing runs.
//!   The response entry is written before the answer leaves; if no device
//!   recorded it, the client gets 500 instead of the result. Denied requests
//!   are recorded too.
//! * Beyond Vault: a device write is bounded by the device's
//!   `write_timeout` (default 2 s), so a hung disk or pipe fails that device
//!   instead of freezing every request; failures are counted
//!   ([`AuditCounters`], exported as `vault_audit_log_request_failure` and
//!   `vault_audit_log_response_failure`) and logged once per burst, not per
//!   request; `reopen` (SIGHUP) reopens every file for logrotate; and a
//!   device can always be disabled (`DELETE sys/audit/<path>` runs even when
//!   no device can record it, with a warning in the server log), so a broken
//!   device never locks operators out.
//!
//! # Storage (Vault's layout)
//! The device table is at `core/audit` (`core/local-audit` for devices
//! enabled with `local`), in Vault's mount-table JSON; each device's HMAC
//! salt (a random UUID string) is at `audit/<device uuid>/salt`. Disabling
//! a device deletes its salt, so old HMACs cannot be recomputed.

mod entry;
mod file;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use seal_core::{Storage, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

pub(crate) use entry::{MountInfo, Outcome, Record, error_text};

use super::util::{Fields, parse_duration_secs, random_base62, random_uuid};
use super::{Ctx, LogicalError, LogicalResponse, Operation};
use entry::{Hasher, hmac_sha256};
use file::{FileSink, Target};

const TABLE_PATH: &str = "core/audit";
const LOCAL_TABLE_PATH: &str = "core/local-audit";
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Audit failures since the process started, for metrics.
#[derive(Debug, Default)]
pub struct AuditCounters {
    request_failures: AtomicU64,
    response_failures: AtomicU64,
}

impl AuditCounters {
    /// Requests refused because no device could record them.
    pub fn request_failures(&self) -> u64 {
        self.request_failures.load(Ordering::Relaxed)
    }

    /// Responses withheld because no device could record them.
    pub fn response_failures(&self) -> u64 {
        self.response_failures.load(Ordering::Relaxed)
    }
}

/// Vault's `null` options and config are empty maps.
fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// One row of the device table (Vault's `MountEntry` fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeviceEntry {
    #[serde(default)]
    table: String,
    path: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    description: String,
    uuid: String,
    #[serde(default)]
    accessor: String,
    #[serde(default, deserialize_with = "null_as_default")]
    config: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    options: BTreeMap<String, String>,
    #[serde(default)]
    local: bool,
    #[serde(default)]
    seal_wrap: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DeviceTable {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    entries: Vec<DeviceEntry>,
}

/// A device's settings, from its options.
#[derive(Debug, Clone)]
struct Settings {
    target: Target,
    prefix: String,
    hmac_accessor: bool,
    log_raw: bool,
    elide_list_responses: bool,
    skip_test: bool,
    write_timeout: Duration,
}

fn option_bool(
    options: &BTreeMap<String, String>,
    key: &str,
    default: bool,
) -> Result<bool, String> {
    match options.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "t" => Ok(true),
            "false" | "0" | "f" => Ok(false),
            _ => Err(format!("option {key:?} must be true or false, not {v:?}")),
        },
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.strip_suffix("ms") {
        Some(ms) => ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("write_timeout {text:?} is not a duration"))?,
        None => Duration::from_secs(parse_duration_secs(text)?),
    };
    if duration.is_zero() {
        return Err("write_timeout must be above zero".to_owned());
    }
    Ok(duration)
}

impl Settings {
    fn unusable(reason: String) -> Self {
        Self {
            target: Target::Unusable(reason),
            prefix: String::new(),
            hmac_accessor: true,
            log_raw: false,
            elide_list_responses: false,
            skip_test: true,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }

    fn parse(kind: &str, options: &BTreeMap<String, String>) -> Result<Self, String> {
        if kind != "file" {
            return Err(format!("unknown backend type: {kind:?}"));
        }
        let path = options
            .get("file_path")
            .or_else(|| options.get("path"))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .ok_or("file_path is required")?;
        let mode = match options.get("mode").map(|m| m.trim()) {
            None | Some("") => Some(0o600),
            Some(text) => {
                let mode = u32::from_str_radix(text, 8)
                    .map_err(|_| format!("mode {text:?} is not an octal file mode"))?;
                if mode > 0o7777 {
                    return Err(format!("mode {text:?} is not a file mode"));
                }
                // Executable bits are never wanted on a log (CVE-2025-6000).
                (mode != 0).then_some(mode & 0o666)
            }
        };
        let target = match path.to_ascii_lowercase().as_str() {
            "stdout" => Target::Stdout,
            "discard" => Target::Discard,
            _ => Target::Path {
                path: path.into(),
                mode,
            },
        };
        match options.get("format").map(|f| f.trim()) {
            None | Some("" | "json") => {}
            Some(other) => {
                return Err(format!("format {other:?} is not supported; use \"json\""));
            }
        }
        Ok(Self {
            target,
            prefix: options.get("prefix").cloned().unwrap_or_default(),
            hmac_accessor: option_bool(options, "hmac_accessor", true)?,
            log_raw: option_bool(options, "log_raw", false)?,
            elide_list_responses: option_bool(options, "elide_list_responses", false)?,
            skip_test: option_bool(options, "skip_test", false)?,
            write_timeout: match options.get("write_timeout") {
                Some(t) if !t.trim().is_empty() => parse_timeout(t)?,
                _ => DEFAULT_WRITE_TIMEOUT,
            },
        })
    }
}

/// An enabled device.
struct Device {
    entry: DeviceEntry,
    settings: Settings,
    salt: Zeroizing<Vec<u8>>,
    sink: FileSink,
    /// In a failure burst (logged once at its start).
    failing: AtomicBool,
    burst: AtomicU64,
}

impl Device {
    /// Starts the device's writer thread (nothing is opened yet).
    fn start(
        entry: DeviceEntry,
        settings: Settings,
        salt: Zeroizing<Vec<u8>>,
    ) -> Result<Self, LogicalError> {
        let sink = FileSink::start(settings.target.clone(), settings.write_timeout)
            .map_err(|e| LogicalError::invalid(format!("starting the audit writer thread: {e}")))?;
        Ok(Self {
            entry,
            settings,
            salt,
            sink,
            failing: AtomicBool::new(false),
            burst: AtomicU64::new(0),
        })
    }

    fn hasher(&self) -> Hasher<'_> {
        Hasher {
            salt: &self.salt,
            hmac_accessor: self.settings.hmac_accessor,
            log_raw: self.settings.log_raw,
        }
    }

    fn record_result(&self, what: &str, result: &Result<(), String>) {
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    let failed = self.burst.swap(0, Ordering::Relaxed);
                    tracing::warn!(
                        device = %self.entry.path,
                        target = %self.sink.target(),
                        failed_writes = failed,
                        "audit device recovered"
                    );
                }
            }
            Err(error) => {
                self.burst.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        device = %self.entry.path,
                        target = %self.sink.target(),
                        %error,
                        "audit device failed to record a {what}; further failures are counted \
                         (vault_audit_log_*_failure) and logged again only after it recovers"
                    );
                }
            }
        }
    }
}

/// The audit devices of one logical layer.
pub(crate) struct AuditBroker {
    devices: RwLock<Arc<Vec<Arc<Device>>>>,
    /// Fast check for the common case of no device.
    enabled: AtomicBool,
    /// Serialises enable and disable.
    changes: tokio::sync::Mutex<()>,
    counters: Arc<AuditCounters>,
    /// No device could record the last request or response.
    failing: AtomicBool,
}

impl std::fmt::Debug for AuditBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBroker")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

async fn load_table(storage: &dyn Storage, path: &str) -> Result<DeviceTable, LogicalError> {
    match storage.get(path).await? {
        Some(bytes) => {
            // Vault writes this table gzip-compressed behind a canary byte.
            let json =
                crate::adopt::decompress(&bytes).map_err(|e| LogicalError::corrupt(path, e))?;
            serde_json::from_slice(&json).map_err(|e| LogicalError::corrupt(path, e))
        }
        None => Ok(DeviceTable::default()),
    }
}

fn salt_path(uuid: &str) -> String {
    format!("audit/{uuid}/salt")
}

fn encode_table(path: &str, entries: Vec<DeviceEntry>) -> Result<Vec<u8>, LogicalError> {
    let table = DeviceTable {
        kind: "audit".to_owned(),
        entries,
    };
    serde_json::to_vec(&table).map_err(|e| LogicalError::corrupt(path, e))
}

async fn load_devices(storage: &dyn Storage) -> Result<Vec<Arc<Device>>, LogicalError> {
    let mut devices = Vec::new();
    for path in [TABLE_PATH, LOCAL_TABLE_PATH] {
        for entry in load_table(storage, path).await?.entries {
            let salt = match storage.get(&salt_path(&entry.uuid)).await? {
                Some(salt) => Zeroizing::new(salt),
                None => {
                    let fresh = random_uuid()?.into_bytes();
                    storage.put(&salt_path(&entry.uuid), &fresh).await?;
                    Zeroizing::new(fresh)
                }
            };
            let settings = Settings::parse(&entry.kind, &entry.options).unwrap_or_else(|error| {
                tracing::error!(
                    device = %entry.path,
                    %error,
                    "audit device cannot start: requests are refused until it is disabled"
                );
                Settings::unusable(error)
            });
            devices.push(Arc::new(Device::start(entry, settings, salt)?));
        }
    }
    Ok(devices)
}

impl AuditBroker {
    /// Loads the device table and starts every device. A device that cannot
    /// be started is kept in the table and fails its writes (requests are
    /// then refused until it recovers or is disabled), rather than keeping
    /// the node sealed.
    pub(crate) async fn open(
        storage: &dyn Storage,
        counters: Arc<AuditCounters>,
    ) -> Result<Self, LogicalError> {
        let devices = load_devices(storage).await?;
        Ok(Self {
            enabled: AtomicBool::new(!devices.is_empty()),
            devices: RwLock::new(Arc::new(devices)),
            changes: tokio::sync::Mutex::new(()),
            counters,
            failing: AtomicBool::new(false),
        })
    }

    /// Re-reads the device table (after another node changed it).
    pub(crate) async fn reload(&self, storage: &dyn Storage) -> Result<(), LogicalError> {
        let _change = self.changes.lock().await;
        let devices = load_devices(storage).await?;
        self.set_devices(devices);
        Ok(())
    }

    /// Whether any device is enabled (nothing is logged otherwise).
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn devices(&self) -> Arc<Vec<Arc<Device>>> {
        self.devices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_devices(&self, devices: Vec<Arc<Device>>) {
        self.enabled.store(!devices.is_empty(), Ordering::Relaxed);
        *self.devices.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(devices);
    }

    /// Closes and reopens every device's file (SIGHUP, after logrotate).
    pub(crate) fn reopen(&self) {
        for device in self.devices().iter() {
            device.sink.reopen();
        }
    }

    async fn broadcast(&self, what: &str, line: impl Fn(&Device) -> Vec<u8>) -> bool {
        let devices = self.devices();
        if devices.is_empty() {
            return true;
        }
        let pending: Vec<_> = devices.iter().map(|d| (d, d.sink.write(line(d)))).collect();
        let mut any = false;
        for (device, write) in pending {
            let result = write.wait().await;
            device.record_result(what, &result);
            any |= result.is_ok();
        }
        if any {
            if self.failing.swap(false, Ordering::Relaxed) {
                tracing::warn!("audit logging recovered: requests are served again");
            }
        } else if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "no audit device could record a {what}: requests are refused with 500 until a \
                 device recovers or is disabled (DELETE sys/audit/<path> stays possible)"
            );
        }
        any
    }

    /// Records the request entry (with `error` for a refused request).
    /// `false` when devices are enabled and none recorded it.
    pub(crate) async fn log_request(&self, record: &Record<'_>, error: Option<&str>) -> bool {
        let ok = self
            .broadcast("request", |d| {
                entry::request_line(record, &d.hasher(), error, &d.settings.prefix)
            })
            .await;
        if !ok {
            self.counters
                .request_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Records the response entry. `false` when devices are enabled and
    /// none recorded it.
    pub(crate) async fn log_response(&self, record: &Record<'_>, outcome: &Outcome<'_>) -> bool {
        let ok = self
            .broadcast("response", |d| {
                entry::response_line(
                    record,
                    &d.hasher(),
                    outcome,
                    &d.settings.prefix,
                    d.settings.elide_list_responses,
                )
            })
            .await;
        if !ok {
            self.counters
                .response_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// `sys/audit`: the devices keyed by path.
    fn list(&self) -> Value {
        let mut out = Map::new();
        for device in self.devices().iter() {
            let e = &device.entry;
            out.insert(
                e.path.clone(),
                json!({
                    "type": e.kind,
                    "description": e.description,
                    "options": e.options,
                    "local": e.local,
                    "path": e.path,
                }),
            );
        }
        Value::Object(out)
    }

    async fn enable(
        &self,
        storage: &dyn Storage,
        path: &str,
        ctx: &Ctx<'_>,
    ) -> Result<(), LogicalError> {
        let fields = Fields::new(ctx.req.data.as_ref());
        let kind = fields.string("type")?.unwrap_or_default();
        if kind.is_empty() {
            return Err(LogicalError::invalid("type is required"));
        }
        let description = fields.string("description")?.unwrap_or_default();
        let local = fields.bool("local")?.unwrap_or(false);
        let options = fields.string_map("options")?.unwrap_or_default();
        let settings = Settings::parse(&kind, &options).map_err(LogicalError::InvalidRequest)?;

        let _change = self.changes.lock().await;
        let current = self.devices();
        if current
            .iter()
            .any(|d| d.entry.path.starts_with(path) || path.starts_with(d.entry.path.as_str()))
        {
            return Err(LogicalError::invalid("path already in use"));
        }
        let entry = DeviceEntry {
            table: "audit".to_owned(),
            path: path.to_owned(),
            kind,
            description,
            uuid: random_uuid()?,
            accessor: format!("audit_file_{}", random_base62(8)?.to_lowercase()),
            config: Map::new(),
            options,
            local,
            seal_wrap: false,
        };
        let salt = Zeroizing::new(random_uuid()?.into_bytes());
        let device = Device::start(entry, settings, salt)?;
        if !device.settings.skip_test {
            let unusable = |e: String| {
                LogicalError::invalid(format!(
                    "sanity check failed; unable to open {:?} for writing: {e}",
                    device.sink.target()
                ))
            };
            device.sink.open().await.map_err(unusable)?;
            // Vault's probe: a request entry the device must accept.
            let probe = Probe::new();
            let line = entry::request_line(
                &probe.record(),
                &device.hasher(),
                None,
                &device.settings.prefix,
            );
            device.sink.write(line).wait().await.map_err(unusable)?;
        }
        let table_path = if device.entry.local {
            LOCAL_TABLE_PATH
        } else {
            TABLE_PATH
        };
        let mut entries: Vec<DeviceEntry> = current
            .iter()
            .filter(|d| d.entry.local == device.entry.local)
            .map(|d| d.entry.clone())
            .collect();
        entries.push(device.entry.clone());
        storage
            .transaction(vec![
                TxnOp::put(table_path, encode_table(table_path, entries)?),
                TxnOp::put(salt_path(&device.entry.uuid), device.salt.to_vec()),
            ])
            .await?;
        let mut next: Vec<Arc<Device>> = current.iter().cloned().collect();
        next.push(Arc::new(device));
        self.set_devices(next);
        tracing::info!(path, "enabled audit device");
        Ok(())
    }

    async fn disable(&self, storage: &dyn Storage, path: &str) -> Result<(), LogicalError> {
        let _change = self.changes.lock().await;
        let current = self.devices();
        let Some(removed) = current.iter().find(|d| d.entry.path == path).cloned() else {
            return Ok(());
        };
        let table_path = if removed.entry.local {
            LOCAL_TABLE_PATH
        } else {
            TABLE_PATH
        };
        let entries: Vec<DeviceEntry> = current
            .iter()
            .filter(|d| d.entry.local == removed.entry.local && d.entry.path != path)
            .map(|d| d.entry.clone())
            .collect();
        storage
            .transaction(vec![
                TxnOp::put(table_path, encode_table(table_path, entries)?),
                TxnOp::delete(salt_path(&removed.entry.uuid)),
            ])
            .await?;
        self.set_devices(
            current
                .iter()
                .filter(|d| d.entry.path != path)
                .cloned()
                .collect(),
        );
        tracing::info!(path, "disabled audit device");
        Ok(())
    }

    fn hash(&self, path: &str, input: &str) -> Result<String, LogicalError> {
        let devices = self.devices();
        let device = devices
            .iter()
            .find(|d| d.entry.path == path)
            .ok_or_else(|| LogicalError::invalid(format!("unknown audit backend {path:?}")))?;
        Ok(hmac_sha256(&device.salt, input))
    }
}

/// The request Vault writes to a new device to prove it works.
struct Probe {
    id: String,
}

impl Probe {
    fn new() -> Self {
        Self {
            id: random_uuid().unwrap_or_default(),
        }
    }

    fn record(&self) -> Record<'_> {
        Record {
            id: &self.id,
            operation: Operation::Update,
            path: "sys/audit/test",
            data: None,
            token: None,
            caller: None,
            mount: None,
            remote_address: None,
        }
    }
}

/// `sys/audit`, `sys/audit/<path>` and `sys/audit-hash/<path>`; `None`
/// for other paths.
pub(crate) async fn handle(
    broker: &AuditBroker,
    ctx: &mut Ctx<'_>,
    path: &str,
) -> Option<Result<LogicalResponse, LogicalError>> {
    let op = ctx.req.operation;
    if path == "sys/audit" || path == "sys/audit/" {
        return Some(match op {
            Operation::Read => Ok(LogicalResponse {
                data_at_top_level: true,
                ..LogicalResponse::ok(broker.list())
            }),
            _ => Err(ctx.unsupported()),
        });
    }
    if let Some(rest) = path.strip_prefix("sys/audit-hash/") {
        let device = device_path(rest);
        return Some(match op {
            Operation::Create | Operation::Update => {
                let input = ctx.fields().string("input");
                match input {
                    Err(e) => Err(e),
                    Ok(input) => {
                        let input = input.unwrap_or_default();
                        if input.is_empty() {
                            Err(LogicalError::invalid("the \"input\" parameter is empty"))
                        } else {
                            broker.hash(&device, &input).map(|hash| LogicalResponse {
                                data_at_top_level: true,
                                ..LogicalResponse::ok(json!({ "hash": hash }))
                            })
                        }
                    }
                }
            }
            _ => Err(ctx.unsupported()),
        });
    }
    let rest = path.strip_prefix("sys/audit/")?;
    let device = device_path(rest);
    if device == "/" {
        return Some(Err(LogicalError::invalid("backend path must be specified")));
    }
    Some(match op {
        Operation::Create | Operation::Update => broker
            .enable(ctx.storage, &device, ctx)
            .await
            .map(|()| LogicalResponse::no_content()),
        Operation::Delete => broker
            .disable(ctx.storage, &device)
            .await
            .map(|()| LogicalResponse::no_content()),
        _ => Err(ctx.unsupported()),
    })
}

/// Vault's device path: no leading `/`, exactly one trailing `/`.
fn device_path(raw: &str) -> String {
    format!("{}/", raw.trim_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn settings_follow_vaults_options() {
        let s = Settings::parse("file", &options(&[("file_path", "stdout")])).unwrap();
        assert_eq!(s.target, Target::Stdout);
        assert!(s.hmac_accessor && !s.log_raw);
        assert_eq!(s.write_timeout, DEFAULT_WRITE_TIMEOUT);
        let s = Settings::parse(
            "file",
            &options(&[
                ("path", "/var/log/a.log"),
                ("mode", "0755"),
                ("hmac_accessor", "false"),
                ("log_raw", "true"),
                ("write_timeout", "250ms"),
                ("prefix", "AUDIT "),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.target,
            Target::Path {
                path: "/var/log/a.log".into(),
                mode: Some(0o644)
            }
        );
        assert!(!s.hmac_accessor && s.log_raw);
        assert_eq!(s.write_timeout, Duration::from_millis(250));
        assert_eq!(s.prefix, "AUDIT ");
        for (kind, opts, wanted) in [
            ("socket", vec![("file_path", "x")], "unknown backend type"),
            ("file", vec![], "file_path is required"),
            ("file", vec![("file_path", "x"), ("mode", "rw")], "octal"),
            (
                "file",
                vec![("file_path", "x"), ("format", "jsonx")],
                "not supported",
            ),
            (
                "file",
                vec![("file_path", "x"), ("log_raw", "maybe")],
                "true or false",
            ),
            (
                "file",
                vec![("file_path", "x"), ("write_timeout", "0s")],
                "above zero",
            ),
        ] {
            let err = Settings::parse(kind, &options(&opts)).unwrap_err();
            assert!(err.contains(wanted), "{kind} {opts:?}: {err}");
        }
    }

    #[test]
    fn vault_tables_decode() {
        let table: DeviceTable = serde_json::from_str(
            r#"{"type":"audit","entries":[{"table":"audit","path":"file/","type":"file","description":"","uuid":"u","accessor":"audit_file_1","config":null,"options":{"file_path":"/tmp/x"},"local":false,"seal_wrap":false}]}"#,
        )
        .unwrap();
        assert_eq!(table.entries[0].options["file_path"], "/tmp/x");
        assert_eq!(device_path("/file"), "file/");
    }
}
