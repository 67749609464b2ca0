//! Vault's audit entries: one JSON object per line, a `request` entry
//! before the backend runs and a `response` entry after, sharing
//! `request.id`, with secrets replaced by `hmac-sha256:<hex>` under the
//! device's salt (see Vault's `audit/format.go` and `hashstructure.go`).
//!
//! What is hashed: client tokens always (unless the device logs raw);
//! accessors when `hmac_accessor` is on (the default); every string leaf of
//! request and response data at any depth, except map keys and strings that
//! are RFC 3339 timestamps. Paths, operations, policies, display names,
//! metadata, warnings and errors stay readable.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::logical::authz::Caller;
use crate::logical::util::rfc3339;
use crate::logical::{LogicalResponse, Operation};

/// How one device renders secrets.
pub(crate) struct Hasher<'a> {
    pub(crate) salt: &'a [u8],
    pub(crate) hmac_accessor: bool,
    pub(crate) log_raw: bool,
}

/// `hmac-sha256:<hex>` of `input` keyed by `salt` (also `sys/audit-hash`).
pub(crate) fn hmac_sha256(salt: &[u8], input: &str) -> String {
    // HMAC accepts keys of any length; the fallback is unreachable.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(salt) else {
        return String::new();
    };
    mac.update(input.as_bytes());
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

impl Hasher<'_> {
    fn secret(&self, value: &str) -> String {
        if self.log_raw || value.is_empty() {
            value.to_owned()
        } else {
            hmac_sha256(self.salt, value)
        }
    }

    fn accessor(&self, value: &str) -> String {
        if self.hmac_accessor {
            self.secret(value)
        } else {
            value.to_owned()
        }
    }

    fn data(&self, value: &Value) -> Value {
        if self.log_raw {
            return value.clone();
        }
        match value {
            Value::String(s) if OffsetDateTime::parse(s, &Rfc3339).is_ok() => value.clone(),
            Value::String(s) => Value::String(hmac_sha256(self.salt, s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.data(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.data(v))).collect())
            }
            other => other.clone(),
        }
    }
}

/// The mount a request was routed to, as audit entries name it.
#[derive(Debug, Clone, Default)]
pub(crate) struct MountInfo {
    pub(crate) point: String,
    pub(crate) kind: String,
    pub(crate) accessor: String,
}

/// Everything an entry says about one request.
pub(crate) struct Record<'a> {
    pub(crate) id: &'a str,
    pub(crate) operation: Operation,
    pub(crate) path: &'a str,
    pub(crate) data: Option<&'a Map<String, Value>>,
    pub(crate) token: Option<&'a str>,
    pub(crate) caller: Option<&'a Caller>,
    pub(crate) mount: Option<&'a MountInfo>,
    pub(crate) remote_address: Option<&'a str>,
}

/// How a request ended.
pub(crate) enum Outcome<'a> {
    Response(&'a LogicalResponse),
    Error(String),
}

impl<'a> Outcome<'a> {
    /// The outcome of a routed request.
    pub(crate) fn of(result: &'a Result<LogicalResponse, crate::logical::LogicalError>) -> Self {
        match result {
            Ok(resp) => Self::Response(resp),
            Err(err) => Self::Error(error_text(err)),
        }
    }
}

/// The error as Vault's audit entries give it: the text the client sees
/// when that is one message (`1 error occurred:\n\t* permission denied\n\n`
/// for an ACL refusal), the error's own text otherwise.
pub(crate) fn error_text(err: &crate::logical::LogicalError) -> String {
    match err.errors().as_slice() {
        [one] => one.clone(),
        _ => err.to_string(),
    }
}

fn insert_nonempty(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if !empty {
        map.insert(key.to_owned(), value);
    }
}

fn auth_block(record: &Record<'_>, hasher: &Hasher<'_>) -> Option<Value> {
    let caller = record.caller?;
    let entry = &caller.entry;
    let mut auth = Map::new();
    insert_nonempty(
        &mut auth,
        "client_token",
        json!(hasher.secret(record.token.unwrap_or_default())),
    );
    insert_nonempty(
        &mut auth,
        "accessor",
        json!(hasher.accessor(entry.accessor())),
    );
    insert_nonempty(&mut auth, "display_name", json!(entry.display_name()));
    insert_nonempty(&mut auth, "policies", json!(entry.policies()));
    insert_nonempty(&mut auth, "token_policies", json!(entry.policies()));
    insert_nonempty(&mut auth, "metadata", json!(entry.meta()));
    if entry.num_uses() > 0 {
        auth.insert("remaining_uses".into(), json!(entry.num_uses()));
    }
    auth.insert("token_type".into(), json!("service"));
    let ttl = entry.creation_ttl();
    if ttl > 0 {
        auth.insert("token_ttl".into(), json!(ttl));
    }
    // Vault keeps a token's creation time in whole seconds.
    auth.insert(
        "token_issue_time".into(),
        json!(rfc3339(
            entry
                .issue_time()
                .replace_nanosecond(0)
                .unwrap_or(entry.issue_time())
        )),
    );
    let granting: Vec<Value> = caller
        .decision
        .granting_policies
        .iter()
        .map(|name| json!({"name": &**name, "namespace_id": "root", "type": "acl"}))
        .collect();
    let mut results = Map::new();
    results.insert("allowed".into(), json!(caller.decision.allowed));
    insert_nonempty(&mut results, "granting_policies", Value::Array(granting));
    auth.insert("policy_results".into(), Value::Object(results));
    Some(Value::Object(auth))
}

fn request_block(record: &Record<'_>, hasher: &Hasher<'_>) -> Value {
    let mut req = Map::new();
    req.insert("id".into(), json!(record.id));
    req.insert("operation".into(), json!(record.operation.as_str()));
    if let Some(mount) = record.mount {
        insert_nonempty(&mut req, "mount_point", json!(mount.point));
        insert_nonempty(&mut req, "mount_type", json!(mount.kind));
        insert_nonempty(&mut req, "mount_accessor", json!(mount.accessor));
    }
    if let Some(token) = record.token {
        insert_nonempty(&mut req, "client_token", json!(hasher.secret(token)));
    }
    if let Some(caller) = record.caller {
        insert_nonempty(
            &mut req,
            "client_token_accessor",
            json!(hasher.accessor(caller.entry.accessor())),
        );
    }
    req.insert("namespace".into(), json!({"id": "root"}));
    req.insert("path".into(), json!(record.path));
    if let Some(data) = record.data {
        req.insert("data".into(), hasher.data(&Value::Object(data.clone())));
    }
    if let Some(address) = record.remote_address {
        match address.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                req.insert("remote_address".into(), json!(host));
                if let Ok(port) = port.parse::<u16>() {
                    req.insert("remote_port".into(), json!(port));
                }
            }
            _ => {
                req.insert("remote_address".into(), json!(address));
            }
        }
    }
    Value::Object(req)
}

fn response_block(
    record: &Record<'_>,
    hasher: &Hasher<'_>,
    resp: &LogicalResponse,
    elide_lists: bool,
) -> Value {
    let mut out = Map::new();
    if let Some(mount) = record.mount {
        insert_nonempty(&mut out, "mount_point", json!(mount.point));
        insert_nonempty(&mut out, "mount_type", json!(mount.kind));
        insert_nonempty(&mut out, "mount_accessor", json!(mount.accessor));
    }
    if let Some(Value::Object(auth)) = &resp.auth {
        let mut block = Map::new();
        let text = |k: &str| auth.get(k).and_then(Value::as_str).unwrap_or_default();
        insert_nonempty(
            &mut block,
            "client_token",
            json!(hasher.secret(text("client_token"))),
        );
        insert_nonempty(
            &mut block,
            "accessor",
            json!(hasher.accessor(text("accessor"))),
        );
        for key in [
            "policies",
            "token_policies",
            "metadata",
            "entity_id",
            "token_type",
            "num_uses",
        ] {
            if let Some(v) = auth.get(key) {
                insert_nonempty(&mut block, key, v.clone());
            }
        }
        if let Some(ttl) = auth.get("lease_duration") {
            block.insert("token_ttl".into(), ttl.clone());
        }
        out.insert("auth".into(), Value::Object(block));
    }
    if let Some(data) = &resp.data {
        let mut data = data.clone();
        if elide_lists && record.operation == Operation::List {
            elide(&mut data);
        }
        out.insert("data".into(), hasher.data(&data));
    }
    insert_nonempty(&mut out, "warnings", json!(resp.warnings));
    Value::Object(out)
}

/// `elide_list_responses`: list keys become their count.
fn elide(data: &mut Value) {
    let Value::Object(map) = data else {
        return;
    };
    if let Some(Value::Array(keys)) = map.get("keys") {
        let count = keys.len();
        map.insert("keys".into(), json!(count));
    }
    if let Some(Value::Object(info)) = map.get("key_info") {
        let count = info.len();
        map.insert("key_info".into(), json!(count));
    }
}

fn line(prefix: &str, entry: &Value) -> Vec<u8> {
    let mut out = prefix.as_bytes().to_vec();
    // Serializing a Value cannot fail.
    out.extend(serde_json::to_vec(entry).unwrap_or_default());
    out.push(b'\n');
    out
}

/// The `request` entry, as one line (with `prefix`).
pub(crate) fn request_line(
    record: &Record<'_>,
    hasher: &Hasher<'_>,
    error: Option<&str>,
    prefix: &str,
) -> Vec<u8> {
    let mut entry = Map::new();
    entry.insert("time".into(), json!(rfc3339(OffsetDateTime::now_utc())));
    entry.insert("type".into(), json!("request"));
    if let Some(auth) = auth_block(record, hasher) {
        entry.insert("auth".into(), auth);
    }
    entry.insert("request".into(), request_block(record, hasher));
    if let Some(error) = error {
        entry.insert("error".into(), json!(error));
    }
    line(prefix, &Value::Object(entry))
}

/// The `response` entry, as one line (with `prefix`).
pub(crate) fn response_line(
    record: &Record<'_>,
    hasher: &Hasher<'_>,
    outcome: &Outcome<'_>,
    prefix: &str,
    elide_lists: bool,
) -> Vec<u8> {
    let mut entry = Map::new();
    entry.insert("time".into(), json!(rfc3339(OffsetDateTime::now_utc())));
    entry.insert("type".into(), json!("response"));
    if let Some(auth) = auth_block(record, hasher) {
        entry.insert("auth".into(), auth);
    }
    entry.insert("request".into(), request_block(record, hasher));
    match outcome {
        Outcome::Response(resp) => {
            entry.insert(
                "response".into(),
                response_block(record, hasher, resp, elide_lists),
            );
        }
        Outcome::Error(error) => {
            entry.insert("error".into(), json!(error));
            entry.insert(
                "response".into(),
                json!({"data": {"error": hasher.data(&json!(error))}}),
            );
        }
    }
    line(prefix, &Value::Object(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_a_known_answer() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            hmac_sha256(b"Jefe", "what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn every_string_leaf_is_hashed_but_keys_and_timestamps_are_not() {
        let hasher = Hasher {
            salt: b"salt",
            hmac_accessor: true,
            log_raw: false,
        };
        let data = json!({
            "password": "hunter2",
            "nested": {"list": ["a", 1, true, null], "when": "2024-01-02T03:04:05.123Z"},
        });
        let hashed = hasher.data(&data);
        assert_eq!(hashed["password"], json!(hmac_sha256(b"salt", "hunter2")));
        assert_eq!(
            hashed["nested"]["list"][0],
            json!(hmac_sha256(b"salt", "a"))
        );
        assert_eq!(hashed["nested"]["list"][1], json!(1));
        assert_eq!(hashed["nested"]["list"][3], Value::Null);
        assert_eq!(hashed["nested"]["when"], json!("2024-01-02T03:04:05.123Z"));
        let raw = Hasher {
            log_raw: true,
            ..hasher
        };
        assert_eq!(raw.data(&data), data);
    }

    #[test]
    fn lists_can_be_elided() {
        let mut data = json!({"keys": ["a", "b"], "key_info": {"a": {}}});
        elide(&mut data);
        assert_eq!(data, json!({"keys": 2, "key_info": 1}));
    }
}
