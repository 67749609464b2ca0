//! Vault ACL policies: the policy language ([`Policy::parse`]), the
//! compiled per-token [`Acl`], and the policy store behind the barrier.
//!
//! A policy is a list of `path "<pattern>" { capabilities = [...] }` rules
//! written in HCL (version 1, as Vault parses it) or its JSON form. Patterns
//! end in `*` for a prefix match or contain `+` segments; capabilities are
//! Vault's `create read update patch delete list sudo deny` (plus
//! `subscribe`, `recover` and `scan`, accepted so newer files load; they
//! grant nothing here). The legacy `policy = "read"` form,
//! `allowed_parameters`, `denied_parameters`, `required_parameters` and the
//! wrapping TTLs are parsed and enforced as Vault does. See [`acl`] for how
//! a token's policies combine and which rule wins for a path.

mod acl;
pub(crate) mod api;
mod hcl;
pub(crate) mod store;

use std::collections::BTreeMap;

use serde_json::Value;

pub(crate) use acl::requires_sudo;
pub use acl::{Acl, AclDecision, GrantingPolicies};

use super::util::parse_duration_secs;
use hcl::{Item, Node};

/// Capability bits, Vault's values (so merged bitmaps read the same).
pub(crate) mod cap {
    pub(crate) const DENY: u32 = 1;
    pub(crate) const CREATE: u32 = 1 << 1;
    pub(crate) const READ: u32 = 1 << 2;
    pub(crate) const UPDATE: u32 = 1 << 3;
    pub(crate) const DELETE: u32 = 1 << 4;
    pub(crate) const LIST: u32 = 1 << 5;
    pub(crate) const SUDO: u32 = 1 << 6;
    pub(crate) const PATCH: u32 = 1 << 7;
    pub(crate) const SUBSCRIBE: u32 = 1 << 8;
    pub(crate) const RECOVER: u32 = 1 << 9;
    pub(crate) const SCAN: u32 = 1 << 10;

    /// Names in the order Vault reports them in `sys/capabilities`
    /// (before sorting).
    pub(crate) const NAMES: &[(u32, &str)] = &[
        (SUDO, "sudo"),
        (READ, "read"),
        (LIST, "list"),
        (UPDATE, "update"),
        (DELETE, "delete"),
        (CREATE, "create"),
        (PATCH, "patch"),
        (SUBSCRIBE, "subscribe"),
        (RECOVER, "recover"),
        (SCAN, "scan"),
    ];

    pub(crate) fn parse(name: &str) -> Option<u32> {
        match name {
            "deny" => Some(DENY),
            "create" => Some(CREATE),
            "read" => Some(READ),
            "update" => Some(UPDATE),
            "delete" => Some(DELETE),
            "list" => Some(LIST),
            "sudo" => Some(SUDO),
            "patch" => Some(PATCH),
            "subscribe" => Some(SUBSCRIBE),
            "recover" => Some(RECOVER),
            "scan" => Some(SCAN),
            _ => None,
        }
    }
}

/// Allowed or denied values per (lower-cased) parameter name; an empty list
/// means any value.
pub(crate) type ParamMap = BTreeMap<String, Vec<Value>>;

/// What one `path` block grants.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Permissions {
    /// Capability bits ([`cap`]); exactly [`cap::DENY`] for a deny rule.
    pub(crate) caps: u32,
    pub(crate) allowed: Option<ParamMap>,
    pub(crate) denied: Option<ParamMap>,
    pub(crate) required: Vec<String>,
    /// Seconds; 0 = unset.
    pub(crate) min_wrapping_ttl: u64,
    /// Seconds; 0 = unset.
    pub(crate) max_wrapping_ttl: u64,
}

/// One `path` block, with its pattern classified the way Vault stores it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PathRules {
    /// The pattern without a leading `/`; for a plain prefix pattern also
    /// without its trailing `*` (segment-wildcard patterns keep it).
    pub(crate) path: String,
    /// A plain `...*` prefix pattern.
    pub(crate) is_prefix: bool,
    /// Contains a `+` segment (compared segment by segment).
    pub(crate) has_segment_wildcards: bool,
    /// Contains an identity template (`{{identity...}}`): tokens here have
    /// no entity, so Vault's rule applies and the path is skipped.
    pub(crate) templated: bool,
    pub(crate) permissions: Permissions,
}

/// A named, parsed ACL policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    name: String,
    raw: String,
    pub(crate) paths: Vec<PathRules>,
}

/// Why a policy document was refused. Its text is what Vault answers
/// (`failed to parse policy: ...`), 400 at the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse policy: {0}")]
pub struct PolicyError(String);

const TOP_LEVEL_KEYS: &[&str] = &["name", "path"];
const PATH_KEYS: &[&str] = &[
    "comment",
    "policy",
    "capabilities",
    "allowed_parameters",
    "denied_parameters",
    "required_parameters",
    "min_wrapping_ttl",
    "max_wrapping_ttl",
    "mfa_methods",
    "control_group",
    "subscribe_event_types",
    // OpenBao additions, accepted (and ignored) so its policy files load.
    "expiration",
    "pagination_limit",
    "list_scan_response_keys_filter_path",
];

impl Policy {
    /// Parses `raw` (HCL or JSON) as the policy `name`.
    ///
    /// # Errors
    /// [`PolicyError`] for a syntax error, an unknown key, an unknown
    /// capability or legacy policy word, `+*` in a pattern, an unparsable
    /// wrapping TTL, or a maximum wrapping TTL below the minimum.
    pub fn parse(name: &str, raw: &str) -> Result<Self, PolicyError> {
        let items = hcl::parse(raw).map_err(|e| PolicyError(e.to_string()))?;
        let mut paths = Vec::new();
        for item in &items {
            let Some(key) = item.keys.first() else {
                continue;
            };
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                return Err(PolicyError(format!(
                    "invalid key {key:?} on line {}",
                    item.line
                )));
            }
            if key != "path" {
                continue;
            }
            for (pattern, body, line) in path_blocks(item)? {
                paths.push(parse_path(&pattern, body, line)?);
            }
        }
        Ok(Self {
            name: name.to_owned(),
            raw: raw.to_owned(),
            paths,
        })
    }

    /// The built-in `root` policy: it has no rules; a token carrying it
    /// is allowed everything ([`Acl`] short-circuits).
    pub(crate) fn root() -> Self {
        Self {
            name: "root".to_owned(),
            raw: String::new(),
            paths: Vec::new(),
        }
    }

    /// The policy's (lower-case) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy text as written.
    pub fn raw(&self) -> &str {
        &self.raw
    }
}

/// The `(pattern, body, line)` of every rule in a top-level `path` item:
/// `path "p" { }` (HCL) or `"path": {"p": {...}}` / `[{"p": {...}}]`
/// (JSON, and HCL's `path = { "p" = {...} }`).
fn path_blocks(item: &Item) -> Result<Vec<(String, &Node, usize)>, PolicyError> {
    if let Some(pattern) = item.keys.get(1) {
        return Ok(vec![(pattern.clone(), &item.value, item.line)]);
    }
    let nodes: Vec<&Node> = match &item.value {
        Node::List(nodes) => nodes.iter().collect(),
        node => vec![node],
    };
    let mut out = Vec::new();
    for node in nodes {
        let Node::Object(entries) = node else {
            return Err(PolicyError(format!(
                "path on line {}: expected an object of path rules, got a {}",
                item.line,
                node.kind()
            )));
        };
        for entry in entries {
            let pattern = entry.keys.first().cloned().unwrap_or_default();
            out.push((pattern, &entry.value, entry.line));
        }
    }
    Ok(out)
}

fn parse_path(pattern: &str, body: &Node, line: usize) -> Result<PathRules, PolicyError> {
    let fail = |message: String| PolicyError(format!("path {pattern:?}: {message}"));
    // A JSON rule may be a list of bodies; their keys are combined.
    let items: Vec<&Item> = match body {
        Node::Object(items) => items.iter().collect(),
        Node::List(bodies) => {
            let mut all = Vec::new();
            for b in bodies {
                match b {
                    Node::Object(items) => all.extend(items.iter()),
                    other => {
                        return Err(fail(format!("expected an object, got a {}", other.kind())));
                    }
                }
            }
            all
        }
        other => {
            return Err(fail(format!(
                "expected a block on line {line}, got a {}",
                other.kind()
            )));
        }
    };
    let mut capabilities: Vec<String> = Vec::new();
    let mut legacy = String::new();
    let mut allowed = None;
    let mut denied = None;
    let mut required = Vec::new();
    let mut min_wrapping_ttl = 0;
    let mut max_wrapping_ttl = 0;
    for item in items {
        let key = item.keys.first().map(String::as_str).unwrap_or_default();
        if !PATH_KEYS.contains(&key) {
            return Err(fail(format!("invalid key {key:?} on line {}", item.line)));
        }
        match key {
            "capabilities" => capabilities.extend(string_list(&item.value).map_err(&fail)?),
            "policy" => legacy = string(&item.value).map_err(&fail)?,
            "allowed_parameters" => allowed = Some(param_map(&item.value).map_err(&fail)?),
            "denied_parameters" => denied = Some(param_map(&item.value).map_err(&fail)?),
            "required_parameters" => required = string_list(&item.value).map_err(&fail)?,
            "min_wrapping_ttl" => min_wrapping_ttl = duration(&item.value).map_err(&fail)?,
            "max_wrapping_ttl" => max_wrapping_ttl = duration(&item.value).map_err(&fail)?,
            _ => {}
        }
    }

    let path = pattern.strip_prefix('/').unwrap_or(pattern);
    if path.contains("+*") {
        return Err(fail(
            "invalid use of wildcards ('+*' is forbidden)".to_owned(),
        ));
    }
    let has_segment_wildcards = path == "+" || path.starts_with("+/") || path.contains("/+");
    let (path, is_prefix) = match path.strip_suffix('*') {
        Some(stripped) if !has_segment_wildcards => (stripped, true),
        _ => (path, false),
    };

    match legacy.as_str() {
        "" => {}
        "deny" => capabilities = vec!["deny".into()],
        "read" => capabilities.extend(["read".into(), "list".into()]),
        "write" => capabilities.extend(
            ["create", "read", "update", "delete", "list"]
                .iter()
                .map(|s| (*s).to_owned()),
        ),
        "sudo" => capabilities.extend(
            ["create", "read", "update", "delete", "list", "sudo"]
                .iter()
                .map(|s| (*s).to_owned()),
        ),
        other => return Err(fail(format!("invalid policy {other:?}"))),
    }

    let mut permissions = Permissions::default();
    for name in &capabilities {
        let bit = cap::parse(name).ok_or_else(|| fail(format!("invalid capability {name:?}")))?;
        if bit == cap::DENY {
            // A deny rule is exactly {deny}; its other settings are ignored.
            permissions = Permissions {
                caps: cap::DENY,
                ..Permissions::default()
            };
            return Ok(PathRules {
                path: path.to_owned(),
                is_prefix,
                has_segment_wildcards,
                templated: is_templated(path),
                permissions,
            });
        }
        permissions.caps |= bit;
    }
    permissions.allowed = allowed;
    permissions.denied = denied;
    permissions.required = required;
    permissions.min_wrapping_ttl = min_wrapping_ttl;
    permissions.max_wrapping_ttl = max_wrapping_ttl;
    if max_wrapping_ttl > 0 && max_wrapping_ttl < min_wrapping_ttl {
        return Err(fail(
            "max_wrapping_ttl cannot be less than min_wrapping_ttl".to_owned(),
        ));
    }
    Ok(PathRules {
        path: path.to_owned(),
        is_prefix,
        has_segment_wildcards,
        templated: is_templated(path),
        permissions,
    })
}

fn is_templated(path: &str) -> bool {
    path.contains("{{") && path.contains("}}")
}

fn string(node: &Node) -> Result<String, String> {
    match node {
        Node::Str(s) => Ok(s.clone()),
        other => Err(format!("expected a string, got a {}", other.kind())),
    }
}

fn string_list(node: &Node) -> Result<Vec<String>, String> {
    match node {
        Node::List(items) => items
            .iter()
            .map(|i| match i {
                Node::Str(s) => Ok(s.clone()),
                other => Err(format!(
                    "expected a list of strings, found a {}",
                    other.kind()
                )),
            })
            .collect(),
        other => Err(format!(
            "expected a list of strings, got a {}",
            other.kind()
        )),
    }
}

fn duration(node: &Node) -> Result<u64, String> {
    match node {
        Node::Str(s) => parse_duration_secs(s),
        Node::Number(n) => n.as_u64().ok_or_else(|| format!("invalid duration {n}")),
        other => Err(format!("expected a duration, got a {}", other.kind())),
    }
}

fn param_map(node: &Node) -> Result<ParamMap, String> {
    let items: Vec<&Item> = match node {
        Node::Object(items) => items.iter().collect(),
        Node::List(bodies) => bodies
            .iter()
            .filter_map(|b| match b {
                Node::Object(items) => Some(items.iter()),
                _ => None,
            })
            .flatten()
            .collect(),
        other => {
            return Err(format!(
                "expected an object of parameter lists, got a {}",
                other.kind()
            ));
        }
    };
    let mut map = ParamMap::new();
    for item in items {
        let name = item.keys.join(".").to_lowercase();
        let values = match &item.value {
            Node::List(values) => values.iter().map(Node::to_json).collect(),
            other => vec![other.to_json()],
        };
        map.entry(name).or_default().extend(values);
    }
    Ok(map)
}

/// Vault's name normalisation: trimmed and lower-cased.
pub(crate) fn sanitize_name(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Vault's `SanitizePolicies`: lower-case, trim, drop empties, optionally
/// add `default`, de-duplicate, sort; a list holding `root` becomes
/// exactly `[root]`.
pub(crate) fn sanitize_policies(policies: &[String], add_default: bool) -> Vec<String> {
    let mut out: Vec<String> = policies
        .iter()
        .map(|p| sanitize_name(p))
        .filter(|p| !p.is_empty())
        .collect();
    if out.iter().any(|p| p == "root") {
        return vec!["root".to_owned()];
    }
    if add_default {
        out.push("default".to_owned());
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn rules(text: &str) -> Vec<PathRules> {
        Policy::parse("t", text).unwrap().paths
    }

    #[test]
    fn patterns_are_classified_like_vault() {
        let p = rules(
            r#"
            path "secret/exact" { capabilities = ["read"] }
            path "/secret/glob*" { capabilities = ["read"] }
            path "secret/+/x" { capabilities = ["read"] }
            path "secret/+/y*" { capabilities = ["read"] }
            path "secret/mid*dle" { capabilities = ["read"] }
            "#,
        );
        let summary: Vec<(&str, bool, bool)> = p
            .iter()
            .map(|r| (r.path.as_str(), r.is_prefix, r.has_segment_wildcards))
            .collect();
        assert_eq!(
            summary,
            [
                ("secret/exact", false, false),
                ("secret/glob", true, false),
                ("secret/+/x", false, true),
                ("secret/+/y*", false, true),
                ("secret/mid*dle", false, false),
            ]
        );
    }

    #[test]
    fn capabilities_and_legacy_words() {
        let p = rules(
            r#"
            path "a" { capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo", "subscribe", "recover"] }
            path "b" { policy = "read" }
            path "c" { policy = "write" }
            path "d" { policy = "sudo" }
            path "e" { policy = "deny" }
            path "f" { capabilities = ["read", "deny"] allowed_parameters = { "x" = [] } }
            "#,
        );
        assert_eq!(p[0].permissions.caps, 0b11_1111_1110);
        assert_eq!(p[1].permissions.caps, cap::READ | cap::LIST);
        assert_eq!(
            p[2].permissions.caps,
            cap::CREATE | cap::READ | cap::UPDATE | cap::DELETE | cap::LIST
        );
        assert_eq!(p[3].permissions.caps & cap::SUDO, cap::SUDO);
        assert_eq!(p[4].permissions.caps, cap::DENY);
        assert_eq!(
            p[5].permissions,
            Permissions {
                caps: cap::DENY,
                ..Permissions::default()
            }
        );
    }

    #[test]
    fn parameters_and_wrapping_ttls() {
        let p = rules(
            r#"
            path "a" {
              capabilities = ["update"]
              allowed_parameters = { "Foo" = ["bar*", 1, true], "*" = [] }
              denied_parameters = { "x" = [] }
              required_parameters = ["foo"]
              min_wrapping_ttl = "1m"
              max_wrapping_ttl = 3600
            }
            "#,
        );
        let perms = &p[0].permissions;
        let allowed = perms.allowed.as_ref().unwrap();
        assert_eq!(allowed["foo"], [json!("bar*"), json!(1), json!(true)]);
        assert!(allowed["*"].is_empty());
        assert!(perms.denied.as_ref().unwrap()["x"].is_empty());
        assert_eq!(perms.required, ["foo"]);
        assert_eq!((perms.min_wrapping_ttl, perms.max_wrapping_ttl), (60, 3600));
    }

    #[test]
    fn json_form_matches_hcl() {
        let hcl = rules(r#"path "s/*" { capabilities = ["read", "list"] }"#);
        let json = rules(r#"{"path": {"s/*": {"capabilities": ["read", "list"]}}}"#);
        assert_eq!(hcl, json);
        let list = rules(r#"{"path": [{"s/*": {"capabilities": ["read", "list"]}}]}"#);
        assert_eq!(hcl, list);
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        for (text, wanted) in [
            (
                r#"path "a" { capabilities = ["bogus"] }"#,
                "invalid capability \"bogus\"",
            ),
            (
                r#"foo "a" { capabilities = ["read"] }"#,
                "invalid key \"foo\" on line 1",
            ),
            (
                r#"path "a" { capabilities = ["read"] bogus = 1 }"#,
                "invalid key \"bogus\"",
            ),
            (
                r#"path "a+*" { capabilities = ["read"] }"#,
                "'+*' is forbidden",
            ),
            (
                r#"path "a" { policy = "bogus" }"#,
                "invalid policy \"bogus\"",
            ),
            (
                r#"path "a" { capabilities = ["read"] min_wrapping_ttl = "2h" max_wrapping_ttl = "1h" }"#,
                "max_wrapping_ttl cannot be less than min_wrapping_ttl",
            ),
            (
                r#"path "a" { capabilities = "read" }"#,
                "expected a list of strings",
            ),
            (r#"path "a" { min_wrapping_ttl = "soon" }"#, "duration"),
            ("path \"a\" {", "expected '}'"),
        ] {
            let err = Policy::parse("t", text).unwrap_err().to_string();
            assert!(err.starts_with("failed to parse policy: "), "{err}");
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }

    #[test]
    fn names_and_token_policy_lists() {
        assert_eq!(sanitize_name("  MyPol "), "mypol");
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            sanitize_policies(&list(&["B", "a", "", "a"]), true),
            ["a", "b", "default"]
        );
        assert_eq!(sanitize_policies(&list(&["a", "Root"]), true), ["root"]);
    }

    proptest! {
        #[test]
        fn arbitrary_policy_text_never_panics(text in "\\PC{0,300}") {
            let _ = Policy::parse("p", &text);
        }

        #[test]
        fn arbitrary_rule_bodies_never_panic(
            pattern in "[a-z/+*{}]{0,12}",
            caps in proptest::collection::vec("[a-z]{0,8}", 0..4),
            ttl in "[0-9a-z]{0,4}",
        ) {
            let caps: Vec<String> = caps.iter().map(|c| format!("{c:?}")).collect();
            let text = format!(
                "path {pattern:?} {{ capabilities = [{}] min_wrapping_ttl = {ttl:?} }}",
                caps.join(",")
            );
            let _ = Policy::parse("p", &text);
        }
    }
}
