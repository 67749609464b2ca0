//! Small helpers shared by the engines: request-field decoding with Vault's
//! lenient typing, Go-style durations, RFC 3339 timestamps, path checks,
//! random identifiers and striped per-key locks.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::LogicalError;

/// Formats `t` as Vault does (Go's `RFC3339Nano`): UTC, `Z`, fractional
/// seconds without trailing zeros.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    // Formatting a UTC timestamp within years 0..=9999 cannot fail; the
    // fallback keeps this infallible without a panic path.
    utc.format(&Rfc3339)
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

/// The current time. One place, so every entry of one request agrees.
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Parses a duration the way Vault's `parseutil.ParseDurationSecond` does:
/// a bare integer (or numeric string) is seconds; otherwise a Go duration
/// (`1h30m`, `90s`, `1.5h`, `500ms`) with Vault's extra `d` unit. The result
/// is whole seconds (sub-second remainders are dropped, like Vault).
pub(crate) fn parse_duration_secs(input: &str) -> Result<u64, String> {
    let text = input.trim();
    if text.is_empty() {
        return Ok(0);
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {input:?}"))?;
        if num_len == 0 {
            return Err(format!("time: invalid duration {input:?}"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("time: invalid duration {input:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            unit => return Err(format!("time: unknown unit {unit:?} in duration {input:?}")),
        };
        rest = &rest[unit_len..];
        total_nanos += number * scale;
    }
    // About 292 years: far beyond any TTL, and keeps the cast exact enough.
    if !total_nanos.is_finite() || total_nanos > 9.2e18 {
        return Err(format!("time: duration {input:?} is out of range"));
    }
    // Truncation to whole seconds is intended.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((total_nanos / 1e9) as u64)
}

/// Formats seconds as Go's `time.Duration.String()` does (`0s`, `30s`,
/// `5m0s`, `1h0m0s`), which is how Vault prints `delete_version_after`.
pub(crate) fn go_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// A view of a request body with Vault's field typing: numbers may come as
/// numeric strings, booleans as `"true"`/`"false"`, string lists as arrays
/// or comma-separated strings. Wrong types are a 400 naming the field.
pub(crate) struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
}

fn type_error(field: &str, expected: &str, got: &Value) -> LogicalError {
    let shown = match got {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        other => other.to_string(),
    };
    LogicalError::invalid(format!(
        "invalid value for field {field:?}: expected {expected}, got {shown}"
    ))
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: Option<&'a Map<String, Value>>) -> Self {
        Self { map }
    }

    pub(crate) fn raw(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    /// Names present in the body but not in `known`, for Vault's
    /// "Endpoint ignored these unrecognized parameters" warning.
    pub(crate) fn unknown_warning(&self, known: &[&str]) -> Option<String> {
        let unknown: Vec<&str> = self
            .map
            .into_iter()
            .flat_map(|m| m.keys())
            .map(String::as_str)
            .filter(|k| !known.contains(k))
            .collect();
        (!unknown.is_empty()).then(|| {
            format!(
                "Endpoint ignored these unrecognized parameters: [{}]",
                unknown.join(" ")
            )
        })
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, LogicalError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(v) => Err(type_error(name, "a string", v)),
        }
    }

    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>, LogicalError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                type_error(name, "a non-negative integer", &Value::Number(n.clone()))
            }),
            Some(v @ Value::String(s)) => s
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| type_error(name, "a non-negative integer", v)),
            Some(v) => Err(type_error(name, "a non-negative integer", v)),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>, LogicalError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v @ Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "t" => Ok(Some(true)),
                "false" | "0" | "f" | "" => Ok(Some(false)),
                _ => Err(type_error(name, "a boolean", v)),
            },
            Some(v @ Value::Number(n)) => match n.as_u64() {
                Some(0) => Ok(Some(false)),
                Some(1) => Ok(Some(true)),
                _ => Err(type_error(name, "a boolean", v)),
            },
            Some(v) => Err(type_error(name, "a boolean", v)),
        }
    }

    /// A duration: integer seconds or a Go duration string.
    pub(crate) fn duration(&self, name: &str) -> Result<Option<u64>, LogicalError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| type_error(name, "a duration", &Value::Number(n.clone()))),
            Some(Value::String(s)) => parse_duration_secs(s).map(Some).map_err(|e| {
                LogicalError::invalid(format!("invalid value for field {name:?}: {e}"))
            }),
            Some(v) => Err(type_error(name, "a duration such as \"1h\" or 3600", v)),
        }
    }

    /// A list of strings: a JSON array of strings or a comma-separated string.
    pub(crate) fn string_list(&self, name: &str) -> Result<Option<Vec<String>>, LogicalError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            Some(v @ Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.trim().to_owned()),
                    _ => Err(type_error(name, "a list of strings", v)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(type_error(name, "a list of strings", v)),
        }
    }

    /// A list of integers (KV v2 `versions`): an array of numbers or numeric
    /// strings, or a comma-separated string.
    pub(crate) fn u64_list(&self, name: &str) -> Result<Option<Vec<u64>>, LogicalError> {
        let parse = |v: &Value, s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| type_error(name, "a list of non-negative integers", v))
        };
        match self.raw(name) {
            None => Ok(None),
            Some(v @ Value::String(s)) => s
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| parse(v, p))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v @ Value::Number(n)) => n
                .as_u64()
                .map(|n| Some(vec![n]))
                .ok_or_else(|| type_error(name, "a list of non-negative integers", v)),
            Some(v @ Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Number(n) => n
                        .as_u64()
                        .ok_or_else(|| type_error(name, "a list of non-negative integers", v)),
                    Value::String(s) => parse(v, s),
                    _ => Err(type_error(name, "a list of non-negative integers", v)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(type_error(name, "a list of non-negative integers", v)),
        }
    }

    /// A JSON object of string values (token `meta`, KV `custom_metadata`).
    /// Numbers and booleans are accepted and kept as their text.
    pub(crate) fn string_map(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, LogicalError> {
        match self.raw(name) {
            None => Ok(None),
            Some(v @ Value::Object(obj)) => obj
                .iter()
                .map(|(k, val)| match val {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    Value::Number(_) | Value::Bool(_) => Ok((k.clone(), val.to_string())),
                    _ => Err(type_error(name, "an object of string values", v)),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(Some),
            Some(v) => Err(type_error(name, "an object of string values", v)),
        }
    }

    /// A JSON object of any values (KV v2 `data`, `options`).
    pub(crate) fn object(
        &self,
        name: &str,
    ) -> Result<Option<&'a Map<String, Value>>, LogicalError> {
        match self.raw(name) {
            None => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(obj)),
            Some(v) => Err(type_error(name, "a JSON object", v)),
        }
    }
}

/// Checks a secret path below a mount. Storage keys forbid empty, `.` and
/// `..` segments and control characters; refusing them here gives the
/// client a 400 that names the path instead of a storage error.
pub(crate) fn validate_secret_path(path: &str) -> Result<(), LogicalError> {
    if path.is_empty() || path.ends_with('/') {
        return Err(LogicalError::invalid(
            "cannot write to a path ending in '/'",
        ));
    }
    if path.len() > 1024 {
        return Err(LogicalError::invalid(
            "secret path is longer than 1024 bytes",
        ));
    }
    validate_segments(path)
}

/// Checks a LIST prefix below a mount (may be empty or end with `/`).
pub(crate) fn validate_list_prefix(prefix: &str) -> Result<(), LogicalError> {
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    if body.is_empty() {
        return Ok(());
    }
    if body.len() > 1024 {
        return Err(LogicalError::invalid("list path is longer than 1024 bytes"));
    }
    validate_segments(body)
}

fn validate_segments(path: &str) -> Result<(), LogicalError> {
    if path.chars().any(|c| c.is_control()) {
        return Err(LogicalError::invalid(format!(
            "path {path:?} contains control characters"
        )));
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(LogicalError::invalid(format!(
                "path {path:?} has an empty, '.' or '..' segment"
            )));
        }
    }
    Ok(())
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` uniformly random base62 characters from the OS CSPRNG (rejection
/// sampling, so no character is more likely than another).
pub(crate) fn random_base62(len: usize) -> Result<String, LogicalError> {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let bytes =
            seal_core::random_bytes(len * 2).map_err(|e| LogicalError::Random(e.to_string()))?;
        for &b in bytes.iter() {
            // 248 = 4 * 62: bytes at or above it would bias the modulo.
            if b < 248 && out.len() < len {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

/// A random RFC 4122 v4 UUID string, for mount UUIDs and request ids.
pub(crate) fn random_uuid() -> Result<String, LogicalError> {
    let bytes = seal_core::random_bytes(16).map_err(|e| LogicalError::Random(e.to_string()))?;
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&bytes);
    Ok(uuid::Builder::from_random_bytes(raw)
        .into_uuid()
        .to_string())
}

/// A fixed set of async mutexes picked by hashing a key. Serialises
/// read-modify-write cycles on one KV v2 key or one token without a map that
/// grows with the number of keys; unrelated keys rarely share a stripe.
#[derive(Debug)]
pub(crate) struct StripedLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl StripedLocks {
    pub(crate) fn new(count: usize) -> Self {
        Self {
            stripes: (0..count.max(1))
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        // The modulo keeps the index in range; truncating the hash is fine.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hasher.finish() % self.stripes.len() as u64) as usize;
        self.stripes[index].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn durations_like_vault() {
        assert_eq!(parse_duration_secs("30"), Ok(30));
        assert_eq!(parse_duration_secs("30s"), Ok(30));
        assert_eq!(parse_duration_secs("1h30m"), Ok(5400));
        assert_eq!(parse_duration_secs("1.5h"), Ok(5400));
        assert_eq!(parse_duration_secs("2d"), Ok(172_800));
        assert_eq!(parse_duration_secs("1500ms"), Ok(1));
        assert_eq!(parse_duration_secs(""), Ok(0));
        assert!(parse_duration_secs("abc").is_err());
        assert!(parse_duration_secs("10x").is_err());
        assert!(parse_duration_secs("10").is_ok());
        assert!(parse_duration_secs("-5s").is_err());
        assert!(parse_duration_secs("99999999999999h").is_err());
    }

    #[test]
    fn go_duration_strings() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30), "30s");
        assert_eq!(go_duration(300), "5m0s");
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(3661), "1h1m1s");
    }

    #[test]
    fn rfc3339_has_nanoseconds_and_z() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_521_685_446_945_319_214).unwrap();
        assert_eq!(rfc3339(t), "2018-03-22T02:24:06.945319214Z");
    }

    #[test]
    fn fields_are_leniently_typed() {
        let body = json!({"n": "5", "b": "true", "l": "a, b", "d": "1m", "m": {"k": 1},
                          "bad": [1], "v": [1, "2"]});
        let map = body.as_object().unwrap();
        let f = Fields::new(Some(map));
        assert_eq!(f.u64("n").unwrap(), Some(5));
        assert_eq!(f.bool("b").unwrap(), Some(true));
        assert_eq!(f.string_list("l").unwrap().unwrap(), ["a", "b"]);
        assert_eq!(f.duration("d").unwrap(), Some(60));
        assert_eq!(f.string_map("m").unwrap().unwrap()["k"], "1");
        assert_eq!(f.u64_list("v").unwrap().unwrap(), [1, 2]);
        let err = f.u64("bad").unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("\"bad\""), "{err}");
        assert!(f.bool("l").is_err());
        assert_eq!(f.u64("missing").unwrap(), None);
        let warning = f.unknown_warning(&["n", "b", "l", "d", "m", "v"]).unwrap();
        assert!(warning.contains("[bad]"), "{warning}");
    }

    #[test]
    fn secret_paths() {
        for good in ["a", "a/b", "with space", "ü/ñ", "a.b"] {
            validate_secret_path(good).unwrap();
        }
        for bad in ["", "a/", "a//b", "./a", "a/../b", "a\nb"] {
            assert!(validate_secret_path(bad).is_err(), "{bad:?}");
        }
        validate_list_prefix("").unwrap();
        validate_list_prefix("a/").unwrap();
        assert!(validate_list_prefix("a//").is_err());
    }

    #[test]
    fn random_ids() {
        let a = random_base62(24).unwrap();
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, random_base62(24).unwrap());
        assert_eq!(random_uuid().unwrap().len(), 36);
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration_secs(&s);
        }

        #[test]
        fn path_checks_never_panic(s in "\\PC{0,64}") {
            let _ = validate_secret_path(&s);
            let _ = validate_list_prefix(&s);
        }
    }
}
