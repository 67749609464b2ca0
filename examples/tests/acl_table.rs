//! The ACL matching rules as a table, each case checked against a real
//! OpenBao dev server in the same run: both servers get the same policies,
//! a token with exactly those policies, and the same request; the case
//! passes only when strongroom, OpenBao and the table's expectation all
//! agree on "allowed" (anything but 403) versus "denied" (403), and the two
//! servers report the same `sys/capabilities` for the path.
//!
//! Cases come from Vault's documented rules (exact beats glob; the
//! five-step priority between `*` and `+` patterns; merging of identical
//! patterns only; deny wiping its pattern; LIST with and without the
//! trailing slash; create versus update through the existence check;
//! parameter constraints; sudo on root-protected paths) and from the
//! complaints in reference §5 (#8813 broad deny losing to a narrow allow,
//! #3892 a second policy taking access away, #2385/#23874 LIST slashes,
//! #9805 KV v2 `data/` and `metadata/`, #7161 `+` with `*`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use serde_json::{Value, json};
use testkit::{BaoDev, Scenario};

/// One row: policies given to a fresh token, one request, the expectation.
struct Case {
    name: &'static str,
    policies: &'static [&'static str],
    /// Also give the token the `default` policy.
    default_policy: bool,
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    allowed: bool,
}

const fn case(
    name: &'static str,
    policies: &'static [&'static str],
    method: &'static str,
    path: &'static str,
    allowed: bool,
) -> Case {
    Case {
        name,
        policies,
        default_policy: false,
        method,
        path,
        body: None,
        allowed,
    }
}

fn with_body(mut c: Case, body: Value) -> Case {
    c.body = Some(body);
    c
}

fn with_default(mut c: Case) -> Case {
    c.default_policy = true;
    c
}

#[allow(clippy::too_many_lines)] // the table itself
fn cases() -> Vec<Case> {
    let v1 = json!({"value": "x"});
    let v2 = json!({"data": {"value": "x"}});
    vec![
        // Exact patterns and globs.
        case(
            "exact allows the path",
            &[r#"path "kv/exact" { capabilities = ["read"] }"#],
            "GET",
            "kv/exact",
            true,
        ),
        case(
            "exact does not cover children",
            &[r#"path "kv/exact" { capabilities = ["read"] }"#],
            "GET",
            "kv/exact/child",
            false,
        ),
        case(
            "glob covers children",
            &[r#"path "kv/app/*" { capabilities = ["read"] }"#],
            "GET",
            "kv/app/x/y",
            true,
        ),
        case(
            "glob matches inside a segment",
            &[r#"path "kv/zip-*" { capabilities = ["read"] }"#],
            "GET",
            "kv/zip-zap/zong",
            true,
        ),
        case(
            "glob does not cover its parent",
            &[r#"path "kv/app/*" { capabilities = ["read"] }"#],
            "GET",
            "kv/app",
            false,
        ),
        case(
            "star in the middle is literal",
            &[r#"path "kv/mid*dle" { capabilities = ["read"] }"#],
            "GET",
            "kv/middle",
            false,
        ),
        case(
            "leading slash is stripped",
            &[r#"path "/kv/lead" { capabilities = ["read"] }"#],
            "GET",
            "kv/lead",
            true,
        ),
        case(
            "patterns are case-sensitive",
            &[r#"path "kv/Case" { capabilities = ["read"] }"#],
            "GET",
            "kv/case",
            false,
        ),
        case(
            "nothing matches: default deny",
            &[r#"path "kv/a" { capabilities = ["read"] }"#],
            "GET",
            "kv/b",
            false,
        ),
        case(
            "capability missing",
            &[r#"path "kv/ro" { capabilities = ["read"] }"#],
            "DELETE",
            "kv/ro",
            false,
        ),
        case(
            "read does not grant list",
            &[r#"path "kv/r/*" { capabilities = ["read"] }"#],
            "LIST",
            "kv/r",
            false,
        ),
        // Which rule wins.
        case(
            "exact beats a glob deny",
            &[r#"path "kv/pub/*" { capabilities = ["deny"] }
                 path "kv/pub/open" { capabilities = ["read"] }"#],
            "GET",
            "kv/pub/open",
            true,
        ),
        case(
            "longer prefix wins over shorter",
            &[r#"path "kv/*" { capabilities = ["read"] }
                 path "kv/secret/*" { capabilities = ["deny"] }"#],
            "GET",
            "kv/secret/x",
            false,
        ),
        case(
            "broad deny loses to a narrower allow (#8813)",
            &[
                r#"path "kv/*" { capabilities = ["deny"] }"#,
                r#"path "kv/team/*" { capabilities = ["read"] }"#,
            ],
            "GET",
            "kv/team/a",
            true,
        ),
        case(
            "broad deny still applies elsewhere",
            &[
                r#"path "kv/*" { capabilities = ["deny"] }"#,
                r#"path "kv/team/*" { capabilities = ["read"] }"#,
            ],
            "GET",
            "kv/other",
            false,
        ),
        // Merging across a token's policies.
        with_body(
            case(
                "identical patterns merge capabilities",
                &[
                    r#"path "kv/m/*" { capabilities = ["read"] }"#,
                    r#"path "kv/m/*" { capabilities = ["update"] }"#,
                ],
                "PUT",
                "kv/m/existing",
                true,
            ),
            v1.clone(),
        ),
        case(
            "a deny wipes its identical pattern",
            &[
                r#"path "kv/d/*" { capabilities = ["read", "list"] }"#,
                r#"path "kv/d/*" { capabilities = ["deny"] }"#,
            ],
            "GET",
            "kv/d/x",
            false,
        ),
        with_body(
            case(
                "a narrower second policy takes access away (#3892)",
                &[
                    r#"path "kv/u/*" { capabilities = ["read", "update"] }"#,
                    r#"path "kv/u/team/*" { capabilities = ["read"] }"#,
                ],
                "PUT",
                "kv/u/team/existing",
                false,
            ),
            v1.clone(),
        ),
        case(
            "deny listed with other capabilities is a deny",
            &[r#"path "kv/x" { capabilities = ["read", "deny"] }"#],
            "GET",
            "kv/x",
            false,
        ),
        // `+` segments and the priority between patterns.
        case(
            "plus matches one segment",
            &[r#"path "kv/+/config" { capabilities = ["read"] }"#],
            "GET",
            "kv/a/config",
            true,
        ),
        case(
            "plus does not match two segments",
            &[r#"path "kv/+/config" { capabilities = ["read"] }"#],
            "GET",
            "kv/a/b/config",
            false,
        ),
        case(
            "plus at the start",
            &[r#"path "+/plusroot" { capabilities = ["read"] }"#],
            "GET",
            "kv/plusroot",
            true,
        ),
        case(
            "plus with a trailing glob (#7161)",
            &[r#"path "kv/+/logs*" { capabilities = ["read"] }"#],
            "GET",
            "kv/a/logs-2024/x",
            true,
        ),
        case(
            "later glob beats earlier plus",
            &[r#"path "kv/team/*" { capabilities = ["list"] }
                 path "kv/+/config" { capabilities = ["read"] }"#],
            "GET",
            "kv/team/config",
            false,
        ),
        case(
            "fewer plus segments win",
            &[r#"path "kv/+/b/c" { capabilities = ["read"] }
                 path "kv/+/+/c" { capabilities = ["deny"] }"#],
            "GET",
            "kv/a/b/c",
            true,
        ),
        case(
            "not-a-prefix beats a prefix",
            &[r#"path "kv/+/x" { capabilities = ["read"] }
                 path "kv/+/x*" { capabilities = ["deny"] }"#],
            "GET",
            "kv/a/x",
            true,
        ),
        case(
            "longer of two plus globs wins",
            &[r#"path "kv/+/ab*" { capabilities = ["read"] }
                 path "kv/+/a*" { capabilities = ["deny"] }"#],
            "GET",
            "kv/q/abc",
            true,
        ),
        case(
            "plain prefix versus plus: the later wildcard wins",
            &[r#"path "kv/a*" { capabilities = ["deny"] }
                 path "kv/+/z" { capabilities = ["read"] }"#],
            "GET",
            "kv/ab/z",
            false,
        ),
        // LIST and the trailing slash.
        case(
            "list on an exact pattern without slash",
            &[r#"path "kv/dir" { capabilities = ["list"] }"#],
            "LIST",
            "kv/dir",
            true,
        ),
        case(
            "list on an exact pattern with slash",
            &[r#"path "kv/dir2/" { capabilities = ["list"] }"#],
            "LIST",
            "kv/dir2",
            true,
        ),
        case(
            "list under a glob",
            &[r#"path "kv/dir3/*" { capabilities = ["list"] }"#],
            "LIST",
            "kv/dir3",
            true,
        ),
        case(
            "list: patterns for the path with its slash come first",
            &[r#"path "kv/dir4*" { capabilities = ["list"] }
                 path "kv/dir4/*" { capabilities = ["deny"] }"#],
            "LIST",
            "kv/dir4/",
            false,
        ),
        case(
            "list: without its slash when nothing else matches (#23874)",
            &[r#"path "kv/+/sub" { capabilities = ["list"] }"#],
            "LIST",
            "kv/t/sub",
            true,
        ),
        case(
            "GET ?list=true is a list",
            &[r#"path "kv/dir5/*" { capabilities = ["list"] }"#],
            "GET",
            "kv/dir5?list=true",
            true,
        ),
        case(
            "list with plus",
            &[r#"path "kv/+/sub/*" { capabilities = ["list"] }"#],
            "LIST",
            "kv/t/sub",
            true,
        ),
        // KV version 2 paths (#9805).
        case(
            "kv2 data path read",
            &[r#"path "secret/data/app/*" { capabilities = ["read"] }"#],
            "GET",
            "secret/data/app/x",
            true,
        ),
        case(
            "kv2 data grant does not open metadata",
            &[r#"path "secret/data/app/*" { capabilities = ["read"] }"#],
            "GET",
            "secret/metadata/app/x",
            false,
        ),
        case(
            "kv2 v1-style path grants nothing",
            &[r#"path "secret/app/*" { capabilities = ["read"] }"#],
            "GET",
            "secret/data/app/x",
            false,
        ),
        case(
            "kv2 metadata list",
            &[r#"path "secret/metadata/app/*" { capabilities = ["list"] }"#],
            "LIST",
            "secret/metadata/app",
            true,
        ),
        case(
            "kv2 plus over data and metadata",
            &[r#"path "secret/+/app/*" { capabilities = ["read"] }"#],
            "GET",
            "secret/metadata/app/x",
            true,
        ),
        with_body(
            case(
                "kv2 write to a new key is create",
                &[r#"path "secret/data/cu/*" { capabilities = ["create"] }"#],
                "PUT",
                "secret/data/cu/new",
                true,
            ),
            v2.clone(),
        ),
        with_body(
            case(
                "kv2 write to an existing key is update",
                &[r#"path "secret/data/cu/*" { capabilities = ["create"] }"#],
                "PUT",
                "secret/data/cu/existing",
                false,
            ),
            v2.clone(),
        ),
        with_body(
            case(
                "kv2 patch needs patch",
                &[r#"path "secret/data/cu/*" { capabilities = ["update"] }"#],
                "PATCH",
                "secret/data/cu/existing",
                false,
            ),
            v2.clone(),
        ),
        with_body(
            case(
                "kv2 patch allowed",
                &[r#"path "secret/data/cu/*" { capabilities = ["patch"] }"#],
                "PATCH",
                "secret/data/cu/existing",
                true,
            ),
            v2,
        ),
        // Create versus update on KV v1 (the existence check).
        with_body(
            case(
                "create on a new path",
                &[r#"path "kv/cu/*" { capabilities = ["create"] }"#],
                "PUT",
                "kv/cu/new",
                true,
            ),
            v1.clone(),
        ),
        with_body(
            case(
                "create does not update",
                &[r#"path "kv/cu/*" { capabilities = ["create"] }"#],
                "PUT",
                "kv/cu/existing",
                false,
            ),
            v1.clone(),
        ),
        with_body(
            case(
                "update does not create",
                &[r#"path "kv/cu2/*" { capabilities = ["update"] }"#],
                "PUT",
                "kv/cu2/new",
                false,
            ),
            v1.clone(),
        ),
        with_body(
            case(
                "update on an existing path",
                &[r#"path "kv/cu2/*" { capabilities = ["update"] }"#],
                "PUT",
                "kv/cu2/existing",
                true,
            ),
            v1.clone(),
        ),
        // Legacy policy words.
        case(
            "legacy read allows list",
            &[r#"path "kv/legacy/*" { policy = "read" }"#],
            "LIST",
            "kv/legacy",
            true,
        ),
        with_body(
            case(
                "legacy write allows create",
                &[r#"path "kv/legacyw/*" { policy = "write" }"#],
                "PUT",
                "kv/legacyw/a",
                true,
            ),
            v1.clone(),
        ),
        case(
            "legacy deny",
            &[r#"path "kv/legacyd" { policy = "deny" }"#],
            "GET",
            "kv/legacyd",
            false,
        ),
        // Parameter constraints (KV v1 bodies are flat).
        with_body(
            case(
                "allowed value",
                &[
                    r#"path "kv/params" { capabilities = ["create", "update"] allowed_parameters = { "color" = ["red", "blue-*"] } }"#,
                ],
                "PUT",
                "kv/params",
                true,
            ),
            json!({"color": "red"}),
        ),
        with_body(
            case(
                "allowed value by glob",
                &[
                    r#"path "kv/params2" { capabilities = ["create", "update"] allowed_parameters = { "color" = ["red", "blue-*"] } }"#,
                ],
                "PUT",
                "kv/params2",
                true,
            ),
            json!({"color": "blue-green"}),
        ),
        with_body(
            case(
                "value not allowed",
                &[
                    r#"path "kv/params3" { capabilities = ["create", "update"] allowed_parameters = { "color" = ["red"] } }"#,
                ],
                "PUT",
                "kv/params3",
                false,
            ),
            json!({"color": "green"}),
        ),
        with_body(
            case(
                "parameter not allowed",
                &[
                    r#"path "kv/params4" { capabilities = ["create", "update"] allowed_parameters = { "color" = [] } }"#,
                ],
                "PUT",
                "kv/params4",
                false,
            ),
            json!({"size": "1"}),
        ),
        with_body(
            case(
                "star allows other parameters",
                &[
                    r#"path "kv/params5" { capabilities = ["create", "update"] allowed_parameters = { "color" = ["red"], "*" = [] } }"#,
                ],
                "PUT",
                "kv/params5",
                true,
            ),
            json!({"color": "red", "size": "1"}),
        ),
        with_body(
            case(
                "denied value",
                &[
                    r#"path "kv/params6" { capabilities = ["create", "update"] denied_parameters = { "color" = ["red"] } }"#,
                ],
                "PUT",
                "kv/params6",
                false,
            ),
            json!({"color": "red"}),
        ),
        with_body(
            case(
                "denied star refuses any data",
                &[
                    r#"path "kv/params7" { capabilities = ["create", "update"] denied_parameters = { "*" = [] } }"#,
                ],
                "PUT",
                "kv/params7",
                false,
            ),
            json!({"a": "b"}),
        ),
        with_body(
            case(
                "required parameter missing",
                &[
                    r#"path "kv/params8" { capabilities = ["create", "update"] required_parameters = ["owner"] }"#,
                ],
                "PUT",
                "kv/params8",
                false,
            ),
            json!({"a": "b"}),
        ),
        with_body(
            case(
                "required parameter present",
                &[
                    r#"path "kv/params9" { capabilities = ["create", "update"] required_parameters = ["owner"] }"#,
                ],
                "PUT",
                "kv/params9",
                true,
            ),
            json!({"owner": "me"}),
        ),
        case(
            "wrapping TTL demands a wrapped request",
            &[r#"path "kv/w" { capabilities = ["read"] min_wrapping_ttl = "1s" }"#],
            "GET",
            "kv/w",
            false,
        ),
        // Root-protected (sudo) paths and sys paths.
        case(
            "sys/audit needs sudo",
            &[r#"path "sys/audit" { capabilities = ["read"] }"#],
            "GET",
            "sys/audit",
            false,
        ),
        case(
            "sys/audit with sudo",
            &[r#"path "sys/audit" { capabilities = ["read", "sudo"] }"#],
            "GET",
            "sys/audit",
            true,
        ),
        case(
            "sys/rotate needs sudo",
            &[r#"path "sys/rotate" { capabilities = ["update"] }"#],
            "PUT",
            "sys/rotate",
            false,
        ),
        case(
            "sys/seal needs sudo",
            &[r#"path "sys/seal" { capabilities = ["update"] }"#],
            "PUT",
            "sys/seal",
            false,
        ),
        case(
            "sudo alone grants nothing",
            &[r#"path "sys/audit" { capabilities = ["sudo"] }"#],
            "GET",
            "sys/audit",
            false,
        ),
        case(
            "policy list needs no sudo",
            &[r#"path "sys/policy" { capabilities = ["read"] }"#],
            "GET",
            "sys/policy",
            true,
        ),
        with_body(
            case(
                "policy writes are update, not create",
                &[r#"path "sys/policies/acl/*" { capabilities = ["create"] }"#],
                "PUT",
                "sys/policies/acl/newpol",
                false,
            ),
            json!({"policy": "path \"x\" { capabilities = [\"read\"] }"}),
        ),
        with_body(
            case(
                "mounts read needs read on sys/mounts",
                &[r#"path "sys/mounts" { capabilities = ["list"] }"#],
                "GET",
                "sys/mounts",
                false,
            ),
            json!({}),
        ),
        // The default policy.
        with_default(case(
            "default: lookup-self",
            &[],
            "GET",
            "auth/token/lookup-self",
            true,
        )),
        with_default(case(
            "default: no token creation",
            &[],
            "POST",
            "auth/token/create",
            false,
        )),
        with_default(case(
            "default: capabilities-self",
            &[],
            "POST",
            "sys/capabilities-self",
            true,
        )),
        with_default(case(
            "a specific default path shadows a broader grant (#6299)",
            &[r#"path "sys/capabilities*" { capabilities = ["deny"] }"#],
            "POST",
            "sys/capabilities-self",
            true,
        )),
    ]
}

/// A request to either server; PATCH gets its merge-patch content type.
async fn send(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = format!("{base}/v1/{path}");
    let mut request = http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            &url,
        )
        .header("X-Vault-Token", token);
    if let Some(body) = body {
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        request = request
            .header("Content-Type", content_type)
            .body(serde_json::to_vec(body).unwrap());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

struct Target {
    name: &'static str,
    http: reqwest::Client,
    base: String,
}

impl Target {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        send(&self.http, &self.base, method, path, "root", body.as_ref()).await
    }

    async fn must(&self, method: &str, path: &str, body: Value) {
        let (code, out) = self.call(method, path, Some(body)).await;
        assert!(
            (200..300).contains(&code),
            "{}: {method} {path}: {code} {out}",
            self.name
        );
    }

    /// Writes the case's policies and returns a token holding exactly them.
    async fn token_for(&self, index: usize, case: &Case) -> String {
        let mut names = Vec::new();
        for (j, policy) in case.policies.iter().enumerate() {
            let name = format!("case{index}-{j}");
            self.must(
                "PUT",
                &format!("sys/policies/acl/{name}"),
                json!({"policy": policy}),
            )
            .await;
            names.push(name);
        }
        // A token with no policy at all would get root's; give it at least
        // one policy that grants nothing.
        if names.is_empty() {
            names.push("nothing".to_owned());
        }
        let (code, out) = self
            .call(
                "POST",
                "auth/token/create",
                Some(json!({"policies": names, "no_default_policy": !case.default_policy, "ttl": "10m"})),
            )
            .await;
        assert_eq!(code, 200, "{}: token create: {out}", self.name);
        out["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    async fn seed(&self) {
        self.must(
            "POST",
            "sys/mounts/kv",
            json!({"type": "kv", "options": {"version": "1"}}),
        )
        .await;
        for path in [
            "kv/m/existing",
            "kv/u/team/existing",
            "kv/cu/existing",
            "kv/cu2/existing",
        ] {
            self.must("PUT", path, json!({"value": "seed"})).await;
        }
        self.must(
            "PUT",
            "secret/data/cu/existing",
            json!({"data": {"value": "seed"}}),
        )
        .await;
    }
}

/// `sys/capabilities` of `token` on the request path (query stripped).
async fn capabilities(target: &Target, token: &str, path: &str) -> Value {
    let path = path.split('?').next().unwrap_or(path);
    let (code, out) = target
        .call(
            "POST",
            "sys/capabilities",
            Some(json!({"token": token, "paths": [path]})),
        )
        .await;
    assert_eq!(code, 200, "{}: capabilities: {out}", target.name);
    out["data"]["capabilities"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_table_agrees_with_openbao() {
    let table = cases();
    assert!(table.len() >= 40, "the table needs at least 40 cases");
    let sc = Scenario::new("policy_table_agrees_with_openbao");
    let strongroom = common::node_dev("root").start(&sc, "strongroom").await;
    let bao = BaoDev::start(&sc, "openbao", "root").await;
    let targets = [
        Target {
            name: "strongroom",
            http: strongroom.http.clone(),
            base: strongroom.base.clone(),
        },
        Target {
            name: "openbao",
            http: bao.http.clone(),
            base: bao.base.clone(),
        },
    ];
    for target in &targets {
        target.seed().await;
    }

    let mut failures = Vec::new();
    for (index, case) in table.iter().enumerate() {
        let mut outcomes = Vec::new();
        for target in &targets {
            let token = target.token_for(index, case).await;
            let (code, body) = send(
                &target.http,
                &target.base,
                case.method,
                case.path,
                &token,
                case.body.as_ref(),
            )
            .await;
            let caps = capabilities(target, &token, case.path).await;
            outcomes.push((target.name, code, body, caps));
        }
        let allowed: Vec<bool> = outcomes.iter().map(|o| o.1 != 403).collect();
        let caps_agree = outcomes[0].3 == outcomes[1].3;
        if allowed.iter().any(|a| *a != case.allowed) || !caps_agree {
            failures.push(format!(
                "#{index} {:?}: {} {} expected {}; {}",
                case.name,
                case.method,
                case.path,
                if case.allowed { "allowed" } else { "denied" },
                outcomes
                    .iter()
                    .map(|(name, code, body, caps)| format!("{name}: {code} {body} caps {caps}"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n{}\nstrongroom log tail:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n"),
        strongroom
            .log()
            .chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
}
