//! ACL check benches: what every request pays for its policy check, and a
//! KV v1 GET through the router with a policy-bearing token against the
//! same GET with the root token.
//!
//! * `acl/check/<case>`: [`Acl::check`] alone on a precompiled ACL made of a
//!   realistic token's policies (the `default` policy plus an application
//!   policy of 24 rules): `exact` hits an exact rule, `prefix` the longest
//!   of several glob rules, `plus` competes a glob with `+` rules, `miss`
//!   finds nothing (denied), `root` is the root short-circuit.
//! * `acl/compile`: building that ACL (done once per policy set, then
//!   cached).
//! * `acl/kv1_get/<token>`: `Logical::handle` of a KV v1 GET through the
//!   barrier, with the root token (no policy lookup) and with a token whose
//!   policies grant the read (token check, cached ACL, check, engine).
//!
//! Run: `cargo bench -p benches --bench acl`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::Criterion;
use serde_json::json;
use strongroom::logical::{Acl, Logical, LogicalRequest, MountKind, Operation, Policy};

const KEYS: u64 = 10_000;

/// An application policy shaped like real ones: exact paths, globs at
/// several depths, `+` segments, a deny, KV v2 data/metadata pairs.
fn app_policy() -> String {
    let mut text = String::new();
    for team in ["payments", "search", "billing", "auth", "mail", "ops"] {
        text.push_str(&format!(
            "path \"secret/data/{team}/*\" {{ capabilities = [\"read\", \"list\"] }}\n\
             path \"secret/metadata/{team}/*\" {{ capabilities = [\"list\"] }}\n"
        ));
    }
    text.push_str(
        "path \"kv/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }\n\
         path \"kv/admin/*\" { capabilities = [\"deny\"] }\n\
         path \"kv/shared/config\" { capabilities = [\"read\"] }\n\
         path \"kv/+/logs/*\" { capabilities = [\"read\"] }\n\
         path \"kv/+/+/status\" { capabilities = [\"read\"] }\n\
         path \"sys/mounts\" { capabilities = [\"read\"] }\n\
         path \"sys/policies/acl/app-*\" { capabilities = [\"read\"] }\n\
         path \"auth/token/lookup\" { capabilities = [\"update\"] }\n\
         path \"transit/encrypt/app\" { capabilities = [\"update\"] }\n\
         path \"transit/decrypt/app\" { capabilities = [\"update\"] }\n\
         path \"pki/issue/app\" { capabilities = [\"update\"] }\n\
         path \"database/creds/app\" { capabilities = [\"read\"] }\n",
    );
    text
}

/// The default policy as `sys/policy/default` holds it on a fresh server.
fn default_policy() -> &'static str {
    r#"
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
path "identity/entity/id/{{identity.entity.id}}" { capabilities = ["read"] }
path "sys/internal/ui/resultant-acl" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "cubbyhole/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/wrapping/wrap" { capabilities = ["update"] }
path "sys/wrapping/lookup" { capabilities = ["update"] }
path "sys/wrapping/unwrap" { capabilities = ["update"] }
path "sys/tools/hash" { capabilities = ["update"] }
path "sys/tools/hash/*" { capabilities = ["update"] }
path "identity/oidc/provider/+/authorize" { capabilities = ["read", "update"] }
"#
}

fn policies() -> Vec<Arc<Policy>> {
    vec![
        Arc::new(Policy::parse("app", &app_policy()).unwrap_or_else(|e| panic!("{e}"))),
        Arc::new(Policy::parse("default", default_policy()).unwrap_or_else(|e| panic!("{e}"))),
    ]
}

fn checks(c: &mut Criterion) {
    let policies = policies();
    let acl = Acl::new(&policies);
    let root = Acl::new(&[Arc::new(
        Policy::parse("root", "").unwrap_or_else(|e| panic!("{e}")),
    )]);
    let mut group = c.benchmark_group("acl/check");
    for (name, acl, op, path, allowed) in [
        ("exact", &acl, Operation::Read, "kv/shared/config", true),
        ("prefix", &acl, Operation::Read, "kv/key-1234", true),
        (
            "kv2",
            &acl,
            Operation::Read,
            "secret/data/search/index/shard-7",
            true,
        ),
        (
            "plus",
            &acl,
            Operation::Read,
            "kv/team/logs/2024-06-01",
            true,
        ),
        ("miss", &acl, Operation::Read, "other/mount/key", false),
        ("root", &root, Operation::Read, "kv/key-1234", true),
    ] {
        assert_eq!(acl.check(op, path, None).allowed, allowed, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| std::hint::black_box(acl.check(op, std::hint::black_box(path), None)));
        });
    }
    group.finish();
    c.bench_function("acl/compile", |b| {
        b.iter(|| std::hint::black_box(Acl::new(&policies)));
    });
}

fn kv_get(c: &mut Criterion) {
    let rt = benches::current_thread_runtime();
    let (logical, root, app) = rt.block_on(async {
        let logical = Logical::new(benches::unsealed_barrier().await)
            .await
            .unwrap_or_else(|e| panic!("logical: {e}"));
        let root = logical
            .create_root_token(None)
            .await
            .unwrap_or_else(|e| panic!("root token: {e}"));
        logical
            .mount("kv/", MountKind::KvV1, "")
            .await
            .unwrap_or_else(|e| panic!("mount kv: {e}"));
        let call = |req: LogicalRequest| {
            let logical = logical.clone();
            async move {
                logical
                    .handle(req)
                    .await
                    .unwrap_or_else(|e| panic!("setup: {e}"))
            }
        };
        call(
            LogicalRequest::new(Operation::Update, "sys/policies/acl/app")
                .with_token(root.as_str())
                .with_data(json!({ "policy": app_policy() })),
        )
        .await;
        let created = call(
            LogicalRequest::new(Operation::Update, "auth/token/create")
                .with_token(root.as_str())
                .with_data(json!({ "policies": ["app"] })),
        )
        .await;
        let app = created
            .auth
            .and_then(|a| a["client_token"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("no token"));
        for i in 0..KEYS {
            call(
                LogicalRequest::new(Operation::Update, format!("kv/key-{i}"))
                    .with_token(root.as_str())
                    .with_data(json!({ "value": "x".repeat(100) })),
            )
            .await;
        }
        (logical, root, app)
    });
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed) % KEYS;
    let mut group = c.benchmark_group("acl/kv1_get");
    for (name, token) in [
        ("root_token", root.as_str()),
        ("policy_token", app.as_str()),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let req = LogicalRequest::new(Operation::Read, format!("kv/key-{}", next()))
                    .with_token(token);
                let logical = &logical;
                async move { logical.handle(req).await.unwrap_or_else(|e| panic!("{e}")) }
            });
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(50)
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1));
    checks(&mut c);
    kv_get(&mut c);
    c.final_summary();
}
