//! [`Acl`]: a token's policies compiled into one lookup structure.
//!
//! Vault's rules, which this reproduces exactly (the table test in
//! `examples/tests/acl_table.rs` checks them against a real OpenBao):
//!
//! * Rules are kept in three sets: exact patterns, plain prefix patterns
//!   (`foo*`) and segment-wildcard patterns (with `+`). Rules of different
//!   policies merge only when their pattern is identical: capability bits
//!   are OR-ed, a `deny` wipes the merged rule to deny-only, parameter lists
//!   are concatenated (an empty list, meaning "any value", wins), required
//!   parameters are unioned and the smaller wrapping TTLs kept.
//! * For a request path the exact rule wins; otherwise the longest matching
//!   prefix rule and every matching `+` rule compete, and the winner is the
//!   one whose first wildcard comes latest, then the one that is not a
//!   prefix, then the one with fewer `+` segments, then the longer, then the
//!   lexicographically greater pattern. Only the winner applies: a broader
//!   `deny` does not block a narrower allow.
//! * LIST also tries the exact rule for the path without its trailing `/`,
//!   and when no rule at all matches the path, the patterns for the path
//!   without its slash.
//! * The `root` policy allows everything, including `sudo`.
//!
//! The check allocates nothing for exact and prefix rules and only walks
//! `+` patterns when the token has some; it is what every request pays, so
//! it is benchmarked (`cargo bench -p benches --bench acl`).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{ParamMap, Permissions, Policy, cap};
use crate::logical::Operation;

/// The capabilities an operation needs, in [`Rule::granted_by`]'s order.
const OPERATION_CAPS: [u32; 6] = [
    cap::READ,
    cap::LIST,
    cap::UPDATE,
    cap::CREATE,
    cap::DELETE,
    cap::PATCH,
];

/// A compiled rule and which policies granted which capability bits.
#[derive(Debug, Clone)]
struct Rule {
    perms: Permissions,
    granting: Vec<(Arc<str>, u32)>,
    /// Per [`OPERATION_CAPS`] entry, the policies granting it, computed
    /// once so a check hands out a shared list instead of building one.
    granted_by: [GrantingPolicies; 6],
}

impl Rule {
    fn new(perms: Permissions, granting: Vec<(Arc<str>, u32)>) -> Self {
        Self {
            perms,
            granting,
            granted_by: Default::default(),
        }
    }

    fn finish(&mut self) {
        for (slot, bit) in self.granted_by.iter_mut().zip(OPERATION_CAPS) {
            *slot = self
                .granting
                .iter()
                .filter(|(_, bits)| bits & bit != 0)
                .map(|(name, _)| name.clone())
                .collect();
        }
    }
}

/// The names of the policies that granted a capability.
pub type GrantingPolicies = Arc<[Arc<str>]>;

static ROOT_GRANT: std::sync::LazyLock<GrantingPolicies> =
    std::sync::LazyLock::new(|| Arc::from(vec![Arc::<str>::from("root")]));

#[derive(Debug, Clone)]
struct SegmentRule {
    /// The pattern as written (with its trailing `*`), the merge key.
    full: Box<str>,
    /// The pattern without a trailing `*`, split at `/`.
    parts: Vec<Box<str>>,
    /// Its length, for the priority rule.
    len: usize,
    is_prefix: bool,
    first_wildcard: usize,
    wildcards: usize,
    rule: Rule,
}

/// The outcome of an ACL check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclDecision {
    /// The operation is allowed (parameters and wrapping rules included).
    pub allowed: bool,
    /// The winning rule carries `sudo` (or the token is root): required on
    /// root-protected paths on top of the operation's capability.
    pub sudo: bool,
    /// The token has the `root` policy.
    pub is_root: bool,
    /// The winning rule's capability bits (0 when no rule matched).
    pub capabilities: u32,
    /// The policies that granted the checked capability (for audit logs).
    pub granting_policies: GrantingPolicies,
}

impl Default for AclDecision {
    fn default() -> Self {
        Self {
            allowed: false,
            sudo: false,
            is_root: false,
            capabilities: 0,
            granting_policies: Arc::from(Vec::new()),
        }
    }
}

/// A token's policies compiled for lookups. Build one per policy set and
/// reuse it: building sorts and merges, checking does not allocate for
/// exact and prefix rules.
#[derive(Debug, Default)]
pub struct Acl {
    root: bool,
    exact: HashMap<Box<str>, Rule>,
    /// Sorted longest first, so the first match is the longest prefix.
    prefix: Vec<(Box<str>, Rule)>,
    segment: Vec<SegmentRule>,
}

fn merge(existing: &mut Rule, policy: &Arc<str>, new: &Permissions) {
    if existing.perms.caps & cap::DENY != 0 {
        return;
    }
    if new.caps & cap::DENY != 0 {
        existing.perms.caps = cap::DENY;
        existing.perms.allowed = None;
        existing.perms.denied = None;
        return;
    }
    existing.perms.caps |= new.caps;
    existing.granting.push((policy.clone(), new.caps));
    let e = &mut existing.perms;
    if new.max_wrapping_ttl > 0
        && (e.max_wrapping_ttl == 0 || new.max_wrapping_ttl < e.max_wrapping_ttl)
    {
        e.max_wrapping_ttl = new.max_wrapping_ttl;
    }
    if new.min_wrapping_ttl > 0
        && (e.min_wrapping_ttl == 0 || new.min_wrapping_ttl < e.min_wrapping_ttl)
    {
        e.min_wrapping_ttl = new.min_wrapping_ttl;
    }
    merge_params(&mut e.allowed, new.allowed.as_ref());
    merge_params(&mut e.denied, new.denied.as_ref());
    for name in &new.required {
        if !e.required.contains(name) {
            e.required.push(name.clone());
        }
    }
}

fn merge_params(existing: &mut Option<ParamMap>, new: Option<&ParamMap>) {
    let Some(new) = new.filter(|n| !n.is_empty()) else {
        return;
    };
    let Some(existing) = existing else {
        *existing = Some(new.clone());
        return;
    };
    for (key, values) in new {
        match existing.get_mut(key) {
            Some(current) if values.is_empty() || current.is_empty() => current.clear(),
            Some(current) => {
                let mut merged = values.clone();
                merged.append(current);
                *current = merged;
            }
            None => {
                existing.insert(key.clone(), values.clone());
            }
        }
    }
}

impl Acl {
    /// Compiles `policies` (a token's, already resolved from names; missing
    /// policies are simply left out). A policy named `root` makes the ACL
    /// allow everything.
    pub fn new(policies: &[Arc<Policy>]) -> Self {
        let mut acl = Self::default();
        let mut prefix: HashMap<Box<str>, Rule> = HashMap::new();
        let mut segment: HashMap<Box<str>, Rule> = HashMap::new();
        for policy in policies {
            if policy.name() == "root" {
                acl.root = true;
                continue;
            }
            let name: Arc<str> = Arc::from(policy.name());
            for rules in &policy.paths {
                if rules.templated {
                    continue;
                }
                let map = if rules.has_segment_wildcards {
                    &mut segment
                } else if rules.is_prefix {
                    &mut prefix
                } else {
                    &mut acl.exact
                };
                match map.get_mut(rules.path.as_str()) {
                    Some(existing) => merge(existing, &name, &rules.permissions),
                    None => {
                        map.insert(
                            rules.path.as_str().into(),
                            Rule::new(
                                rules.permissions.clone(),
                                vec![(name.clone(), rules.permissions.caps)],
                            ),
                        );
                    }
                }
            }
        }
        for rule in acl
            .exact
            .values_mut()
            .chain(prefix.values_mut())
            .chain(segment.values_mut())
        {
            rule.finish();
        }
        acl.prefix = prefix.into_iter().collect();
        acl.prefix
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        acl.segment = segment
            .into_iter()
            .map(|(full, rule)| {
                let first_wildcard = full.find('+').unwrap_or(0);
                let (body, is_prefix) = match full.strip_suffix('*') {
                    Some(body) => (body, true),
                    None => (&*full, false),
                };
                let parts: Vec<Box<str>> = body.split('/').map(Box::from).collect();
                let wildcards = parts.iter().filter(|p| &***p == "+").count();
                SegmentRule {
                    len: body.len(),
                    parts,
                    is_prefix,
                    first_wildcard,
                    wildcards,
                    full,
                    rule,
                }
            })
            .collect();
        acl
    }

    /// Whether the ACL comes from the `root` policy.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The rule that applies to `path` for `op`: the exact rule (for LIST
    /// also the exact rule without the trailing slash), else the best
    /// pattern, else for LIST the best pattern for the path without its
    /// slash (OpenBao's order, checked by the table test).
    fn lookup(&self, op: Operation, path: &str) -> Option<&Rule> {
        if let Some(rule) = self.exact.get(path) {
            return Some(rule);
        }
        let list = op == Operation::List;
        let trimmed = path.strip_suffix('/');
        if list && let Some(rule) = self.exact.get(trimmed.unwrap_or(path)) {
            return Some(rule);
        }
        if let Some(rule) = self.non_exact(path) {
            return Some(rule);
        }
        match trimmed {
            Some(trimmed) if list => self.non_exact(trimmed),
            _ => None,
        }
    }

    /// The best prefix or `+` rule for `path` (Vault's priority order).
    fn non_exact(&self, path: &str) -> Option<&Rule> {
        let longest_prefix = self
            .prefix
            .iter()
            .find(|(prefix, _)| path.starts_with(&**prefix));
        if self.segment.is_empty() {
            return longest_prefix.map(|(_, rule)| rule);
        }
        // (first wildcard, is prefix, wildcards, length, pattern, rule)
        let mut best: Option<(usize, bool, usize, usize, &str, &Rule)> =
            longest_prefix.map(|(p, rule)| (p.len(), true, 0, p.len(), &**p, rule));
        let segments = path.split('/').count();
        'patterns: for seg in &self.segment {
            if segments < seg.parts.len() || (!seg.is_prefix && seg.parts.len() != segments) {
                continue;
            }
            let last = seg.parts.len() - 1;
            for (i, (want, got)) in seg.parts.iter().zip(path.split('/')).enumerate() {
                let ok = &**want == "+"
                    || **want == *got
                    || (seg.is_prefix && i == last && got.starts_with(&**want));
                if !ok {
                    continue 'patterns;
                }
            }
            let candidate = (
                seg.first_wildcard,
                seg.is_prefix,
                seg.wildcards,
                seg.len,
                &seg.full[..seg.len],
                &seg.rule,
            );
            best = match best {
                Some(current) if priority(&current, &candidate) != Ordering::Less => Some(current),
                _ => Some(candidate),
            };
        }
        best.map(|b| b.5)
    }

    /// Checks `op` on `path` (no leading `/`; LIST paths end with `/`, as
    /// Vault's HTTP layer makes them) with the request body `data`.
    pub fn check(
        &self,
        op: Operation,
        path: &str,
        data: Option<&Map<String, Value>>,
    ) -> AclDecision {
        if self.root {
            return AclDecision {
                allowed: true,
                sudo: true,
                is_root: true,
                capabilities: 0,
                granting_policies: ROOT_GRANT.clone(),
            };
        }
        let path = path.trim_start_matches('/');
        let Some(rule) = self.lookup(op, path) else {
            return AclDecision::default();
        };
        let perms = &rule.perms;
        let mut decision = AclDecision {
            sudo: perms.caps & cap::SUDO != 0,
            capabilities: perms.caps,
            ..AclDecision::default()
        };
        let slot = match op {
            Operation::Read => 0,
            Operation::List => 1,
            Operation::Update => 2,
            Operation::Create => 3,
            Operation::Delete => 4,
            Operation::Patch => 5,
        };
        let needed = OPERATION_CAPS[slot];
        if perms.caps & needed == 0 || perms.caps & cap::DENY != 0 {
            return decision;
        }
        // Response wrapping is not offered, so no request is ever wrapped:
        // a rule demanding a wrapping TTL can never be satisfied.
        if perms.max_wrapping_ttl > 0 || perms.min_wrapping_ttl > 0 {
            return decision;
        }
        if matches!(
            op,
            Operation::Read | Operation::Update | Operation::Create | Operation::Patch
        ) && !parameters_allowed(perms, data)
        {
            return decision;
        }
        decision.allowed = true;
        decision.granting_policies = rule.granted_by[slot].clone();
        decision
    }

    /// Vault's `sys/capabilities` answer for `path`: `["root"]` for root,
    /// `["deny"]` when nothing (or a deny) matches, else the capability
    /// names, sorted.
    pub fn capabilities(&self, path: &str) -> Vec<&'static str> {
        if self.root {
            return vec!["root"];
        }
        let path = path.trim_start_matches('/');
        let bits = self
            .lookup(Operation::List, path)
            .map_or(0, |r| r.perms.caps);
        let mut names: Vec<&'static str> = cap::NAMES
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        if bits & cap::DENY != 0 || names.is_empty() {
            names = vec!["deny"];
        }
        names.sort_unstable();
        names
    }

    /// Whether the token may see the mount at `mount_path` (ends with `/`):
    /// some non-deny rule applies to the mount itself or to a path below
    /// it. Vault's `sys/internal/ui/mounts` preflight check.
    pub fn has_mount_access(&self, mount_path: &str) -> bool {
        if self.root {
            return true;
        }
        if self.capabilities(mount_path) != ["deny"] {
            return true;
        }
        const GRANTING: u32 = cap::CREATE
            | cap::DELETE
            | cap::LIST
            | cap::READ
            | cap::SUDO
            | cap::UPDATE
            | cap::PATCH;
        let grants =
            |perms: &Permissions| perms.caps & cap::DENY == 0 && perms.caps & GRANTING != 0;
        if self
            .exact
            .iter()
            .any(|(p, r)| p.starts_with(mount_path) && grants(&r.perms))
            || self
                .prefix
                .iter()
                .any(|(p, r)| p.starts_with(mount_path) && grants(&r.perms))
        {
            return true;
        }
        // Vault's quirk, kept for fidelity: without `+` rules, any prefix
        // rule that is a prefix of the mount path counts (even a deny).
        if self.segment.is_empty() {
            return self
                .prefix
                .iter()
                .any(|(p, _)| mount_path.starts_with(&**p));
        }
        // A `+` pattern whose segments fit the mount path.
        let mount_parts: Vec<&str> = mount_path.trim_end_matches('/').split('/').collect();
        self.segment.iter().any(|seg| {
            grants(&seg.rule.perms)
                && seg.parts.len() >= mount_parts.len()
                && seg
                    .parts
                    .iter()
                    .zip(&mount_parts)
                    .enumerate()
                    .all(|(i, (want, got))| {
                        &**want == "+"
                            || **want == **got
                            || (seg.is_prefix
                                && i + 1 == seg.parts.len()
                                && got.starts_with(&**want))
                    })
        })
    }
}

/// Vault's priority between two non-exact candidates: `Less` when `a`
/// loses to `b`.
fn priority(
    a: &(usize, bool, usize, usize, &str, &Rule),
    b: &(usize, bool, usize, usize, &str, &Rule),
) -> Ordering {
    a.0.cmp(&b.0)
        .then_with(|| b.1.cmp(&a.1))
        .then_with(|| b.2.cmp(&a.2))
        .then_with(|| a.3.cmp(&b.3))
        .then_with(|| a.4.cmp(b.4))
}

fn parameters_allowed(perms: &Permissions, data: Option<&Map<String, Value>>) -> bool {
    let empty = Map::new();
    let data = data.unwrap_or(&empty);
    if perms
        .required
        .iter()
        .any(|name| !data.contains_key(&name.to_lowercase()))
    {
        return false;
    }
    if data.is_empty() {
        return true;
    }
    if let Some(denied) = perms.denied.as_ref().filter(|d| !d.is_empty()) {
        if denied.contains_key("*") {
            return false;
        }
        for (name, value) in data {
            if let Some(list) = denied.get(&name.to_lowercase())
                && value_in_list(value, list)
            {
                return false;
            }
        }
    }
    let Some(allowed) = perms.allowed.as_ref().filter(|a| !a.is_empty()) else {
        return true;
    };
    let allow_all = allowed.contains_key("*");
    if allow_all && allowed.len() == 1 {
        return true;
    }
    data.iter()
        .all(|(name, value)| match allowed.get(&name.to_lowercase()) {
            None => allow_all,
            Some(list) => value_in_list(value, list),
        })
}

/// Vault's `valueInParameterList`: an empty list holds every value; strings
/// match with a leading and/or trailing `*` glob; other values by equality.
fn value_in_list(value: &Value, list: &[Value]) -> bool {
    list.is_empty()
        || list.iter().any(|item| match (item, value) {
            (Value::String(pattern), Value::String(v)) => glob_match(pattern, v),
            (item, value) => item == value,
        })
}

fn glob_match(pattern: &str, value: &str) -> bool {
    if pattern.len() < 2 {
        return pattern == value;
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), Some(_)) => rest
            .strip_suffix('*')
            .is_some_and(|middle| value.contains(middle)),
        (Some(suffix), None) => value.ends_with(suffix),
        (None, Some(prefix)) => value.starts_with(prefix),
        (None, None) => pattern == value,
    }
}

/// Vault's root-protected paths (the system backend's and the token
/// store's `PathsSpecial.Root`, plus `sys/seal` and `sys/step-down`, which
/// their handlers protect): the request needs its capability and `sudo`.
/// A trailing `*` is a prefix match; anything else must match exactly.
const SUDO_PATHS: &[&str] = &[
    "sys/auth/*",
    "sys/remount",
    "sys/audit",
    "sys/audit/*",
    "sys/raw",
    "sys/raw/*",
    "sys/rotate",
    "sys/rotate/keyring",
    "sys/rotate/root",
    "sys/config/cors",
    "sys/config/auditing/*",
    "sys/config/ui/headers/*",
    "sys/plugins/catalog/*",
    "sys/plugins/runtimes/catalog/*",
    "sys/revoke-prefix/*",
    "sys/revoke-force/*",
    "sys/leases/revoke-prefix/*",
    "sys/leases/revoke-force/*",
    "sys/leases/lookup/*",
    "sys/leases",
    "sys/internal/inspect/*",
    "sys/storage/raft/snapshot-auto/config/*",
    "sys/replication/primary/secondary-token",
    "sys/replication/performance/primary/secondary-token",
    "sys/replication/dr/primary/secondary-token",
    "sys/replication/reindex",
    "sys/seal",
    "sys/step-down",
    "auth/token/revoke-orphan/*",
    "auth/token/accessors*",
];

/// Whether `path` is root-protected (needs `sudo`), see [`SUDO_PATHS`].
pub(crate) fn requires_sudo(path: &str) -> bool {
    let path = path.trim_start_matches('/');
    // Every entry is below sys/ or auth/: most requests stop here.
    if !path.starts_with("sys/") && !path.starts_with("auth/") {
        return false;
    }
    SUDO_PATHS.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == *p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn acl(policies: &[&str]) -> Acl {
        let parsed: Vec<Arc<Policy>> = policies
            .iter()
            .enumerate()
            .map(|(i, text)| Arc::new(Policy::parse(&format!("p{i}"), text).unwrap()))
            .collect();
        Acl::new(&parsed)
    }

    fn allowed(acl: &Acl, op: Operation, path: &str) -> bool {
        acl.check(op, path, None).allowed
    }

    #[test]
    fn exact_beats_glob_and_longer_prefix_wins() {
        let a = acl(&[r#"
            path "secret/*" { capabilities = ["read"] }
            path "secret/app/*" { capabilities = ["deny"] }
            path "secret/app/public" { capabilities = ["read"] }
        "#]);
        assert!(allowed(&a, Operation::Read, "secret/other"));
        assert!(!allowed(&a, Operation::Read, "secret/app/private"));
        assert!(allowed(&a, Operation::Read, "secret/app/public"));
        assert!(!allowed(&a, Operation::Update, "secret/other"));
    }

    #[test]
    fn broader_deny_does_not_block_narrower_allow() {
        let a = acl(&[
            r#"path "secret/*" { capabilities = ["deny"] }"#,
            r#"path "secret/team/*" { capabilities = ["read"] }"#,
        ]);
        assert!(allowed(&a, Operation::Read, "secret/team/x"));
        assert!(!allowed(&a, Operation::Read, "secret/x"));
    }

    #[test]
    fn identical_patterns_merge_and_deny_wipes() {
        let merged = acl(&[
            r#"path "kv/*" { capabilities = ["read"] }"#,
            r#"path "kv/*" { capabilities = ["update"] }"#,
        ]);
        assert!(allowed(&merged, Operation::Read, "kv/a"));
        assert!(allowed(&merged, Operation::Update, "kv/a"));
        let wiped = acl(&[
            r#"path "kv/*" { capabilities = ["read", "update"] }"#,
            r#"path "kv/*" { capabilities = ["deny"] }"#,
        ]);
        assert!(!allowed(&wiped, Operation::Read, "kv/a"));
        assert_eq!(wiped.capabilities("kv/a"), ["deny"]);
    }

    #[test]
    fn plus_segments_and_priority() {
        let a = acl(&[r#"
            path "secret/+/config" { capabilities = ["read"] }
            path "secret/team/*" { capabilities = ["list"] }
            path "secret/+/+/deep" { capabilities = ["update"] }
            path "secret/+/x*" { capabilities = ["delete"] }
        "#]);
        assert!(allowed(&a, Operation::Read, "secret/app/config"));
        assert!(!allowed(&a, Operation::Read, "secret/app/config/more"));
        // `secret/team/*` has its glob later than `secret/+/config`'s `+`.
        assert_eq!(a.capabilities("secret/team/config"), ["list"]);
        assert!(allowed(&a, Operation::Update, "secret/a/b/deep"));
        assert!(allowed(&a, Operation::Delete, "secret/a/xyz/more"));
        assert_eq!(a.capabilities("secret/a/other"), ["deny"]);
    }

    #[test]
    fn list_tries_the_path_without_its_slash() {
        let a = acl(&[r#"
            path "secret/metadata" { capabilities = ["list"] }
            path "kv/dir*" { capabilities = ["list"] }
            path "kv/dir/*" { capabilities = ["deny"] }
            path "kv/only*" { capabilities = ["list"] }
            path "kv/seg/+" { capabilities = ["list"] }
        "#]);
        assert!(allowed(&a, Operation::List, "secret/metadata/"));
        assert!(!allowed(&a, Operation::Read, "secret/metadata/"));
        // With the slash `kv/dir/*` matches first and wins.
        assert!(!allowed(&a, Operation::List, "kv/dir/"));
        // Nothing matches `kv/seg/x/`; `kv/seg/x` matches the `+` rule.
        assert!(allowed(&a, Operation::List, "kv/seg/x/"));
        assert!(allowed(&a, Operation::List, "kv/only/"));
    }

    #[test]
    fn parameters_are_checked_on_writes_and_reads() {
        let a = acl(&[r#"
            path "sys/mounts/*" {
              capabilities = ["update"]
              allowed_parameters = { "type" = ["kv"], "options" = [], "description" = ["team-*"] }
              denied_parameters = { "local" = [true] }
            }
            path "req" {
              capabilities = ["update"]
              required_parameters = ["must"]
            }
            path "deny-all-data" {
              capabilities = ["update"]
              denied_parameters = { "*" = [] }
            }
        "#]);
        let check =
            |path: &str, body: Value| a.check(Operation::Update, path, body.as_object()).allowed;
        assert!(check(
            "sys/mounts/x",
            json!({"type": "kv", "options": {"version": "2"}})
        ));
        assert!(check("sys/mounts/x", json!({"description": "team-a"})));
        assert!(!check("sys/mounts/x", json!({"description": "other"})));
        assert!(!check(
            "sys/mounts/x",
            json!({"type": "kv", "seal_wrap": true})
        ));
        assert!(!check("sys/mounts/x", json!({"type": "kv", "local": true})));
        assert!(check("sys/mounts/x", json!({})));
        assert!(!check("req", json!({"other": 1})));
        assert!(!check("req", json!({})));
        assert!(check("req", json!({"must": 1})));
        assert!(check("deny-all-data", json!({})));
        assert!(!check("deny-all-data", json!({"a": 1})));
        // Deletes and lists ignore parameters.
        assert!(!allowed(&a, Operation::Delete, "req"));
    }

    #[test]
    fn merged_parameter_lists() {
        let a = acl(&[
            r#"path "p" { capabilities = ["update"] allowed_parameters = { "a" = ["1"] } }"#,
            r#"path "p" { capabilities = ["update"] allowed_parameters = { "a" = ["2"], "b" = [] } }"#,
        ]);
        let ok = |body: Value| a.check(Operation::Update, "p", body.as_object()).allowed;
        assert!(ok(json!({"a": "1"})));
        assert!(ok(json!({"a": "2", "b": "anything"})));
        assert!(!ok(json!({"a": "3"})));
    }

    #[test]
    fn wrapping_ttls_demand_wrapping() {
        let a = acl(&[r#"path "w" { capabilities = ["read"] min_wrapping_ttl = "1s" }"#]);
        assert!(!allowed(&a, Operation::Read, "w"));
        assert_eq!(a.capabilities("w"), ["read"]);
    }

    #[test]
    fn root_and_empty() {
        let root = Acl::new(&[Arc::new(Policy::root())]);
        let d = root.check(Operation::Delete, "sys/anything", None);
        assert!(d.allowed && d.sudo && d.is_root);
        assert_eq!(root.capabilities("x"), ["root"]);
        let none = Acl::new(&[]);
        assert!(!allowed(&none, Operation::Read, "x"));
        assert_eq!(none.capabilities("x"), ["deny"]);
    }

    #[test]
    fn granting_policies_follow_the_capability() {
        let a = acl(&[
            r#"path "k/*" { capabilities = ["read"] }"#,
            r#"path "k/*" { capabilities = ["update", "read"] }"#,
        ]);
        let names = |op| {
            a.check(op, "k/x", None)
                .granting_policies
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Operation::Read), ["p0", "p1"]);
        assert_eq!(names(Operation::Update), ["p1"]);
    }

    #[test]
    fn templated_paths_are_skipped_without_an_entity() {
        let a = acl(&[
            r#"path "identity/entity/id/{{identity.entity.id}}" { capabilities = ["read"] }"#,
        ]);
        assert!(!allowed(
            &a,
            Operation::Read,
            "identity/entity/id/{{identity.entity.id}}"
        ));
    }

    #[test]
    fn mount_access() {
        let a = acl(&[r#"
            path "secret/data/app/*" { capabilities = ["read"] }
            path "team/+/x" { capabilities = ["read"] }
            path "denied/*" { capabilities = ["deny"] }
        "#]);
        assert!(a.has_mount_access("secret/"));
        assert!(a.has_mount_access("team/"));
        assert!(!a.has_mount_access("denied/"));
        assert!(!a.has_mount_access("other/"));
    }

    #[test]
    fn sudo_paths() {
        for path in [
            "sys/audit",
            "sys/audit/file",
            "sys/rotate",
            "sys/seal",
            "sys/step-down",
            "sys/auth/userpass",
            "auth/token/accessors/",
            "auth/token/revoke-orphan/x",
        ] {
            assert!(requires_sudo(path), "{path}");
        }
        for path in [
            "sys/audit-hash/file",
            "sys/rotate/config",
            "sys/auth",
            "sys/policy/x",
            "sys/mounts/kv",
            "auth/token/create",
            "secret/data/x",
        ] {
            assert!(!requires_sudo(path), "{path}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_paths_never_panic(path in "\\PC{0,64}", op in 0usize..6) {
            let a = acl(&[r#"
                path "a/*" { capabilities = ["read"] }
                path "a/+/b*" { capabilities = ["list"] }
                path "+" { capabilities = ["update"] }
                path "+/+/+/c" { capabilities = ["delete"] }
                path "x" { capabilities = ["create"] required_parameters = ["q"] }
            "#]);
            let op = [Operation::Read, Operation::List, Operation::Create,
                      Operation::Update, Operation::Delete, Operation::Patch][op];
            let _ = a.check(op, &path, None);
            let _ = a.capabilities(&path);
            let _ = a.has_mount_access(&path);
            let _ = requires_sudo(&path);
        }
    }
}
