//! Router tests over `MemoryStorage`: tokens, mounts, KV v1 and v2, with
//! the response shapes and status codes Vault gives.

use std::sync::Arc;
use std::time::Duration;

use seal_core::{MemoryStorage, Storage};
use serde_json::{Value, json};

use testkit::wait;

use super::*;

/// How long a 3 s TTL may take to run out on a loaded machine.
const EXPIRY_DEADLINE: Duration = Duration::from_secs(15);

struct Fixture {
    storage: Arc<MemoryStorage>,
    logical: Logical,
    root: String,
}

async fn fixture() -> Fixture {
    let storage = Arc::new(MemoryStorage::new());
    let logical = Logical::new(storage.clone()).await.unwrap();
    let root = logical.create_root_token(None).await.unwrap();
    Fixture {
        storage,
        logical,
        root,
    }
}

impl Fixture {
    async fn call(
        &self,
        op: Operation,
        path: &str,
        body: Option<Value>,
    ) -> Result<LogicalResponse, LogicalError> {
        self.call_as(&self.root.clone(), op, path, body).await
    }

    async fn call_as(
        &self,
        token: &str,
        op: Operation,
        path: &str,
        body: Option<Value>,
    ) -> Result<LogicalResponse, LogicalError> {
        let mut req = LogicalRequest::new(op, path).with_token(token);
        if let Some(body) = body {
            req = req.with_data(body);
        }
        self.logical.handle(req).await
    }

    async fn ok(&self, op: Operation, path: &str, body: Option<Value>) -> LogicalResponse {
        self.call(op, path, body)
            .await
            .unwrap_or_else(|e| panic!("{op} {path}: {e}"))
    }

    /// [`Fixture::ok`] with `token`.
    async fn ok_as(
        &self,
        token: &str,
        op: Operation,
        path: &str,
        body: Option<Value>,
    ) -> LogicalResponse {
        self.call_as(token, op, path, body)
            .await
            .unwrap_or_else(|e| panic!("{op} {path}: {e}"))
    }

    async fn data(&self, op: Operation, path: &str, body: Option<Value>) -> Value {
        let resp = self.ok(op, path, body).await;
        assert_eq!(resp.status, 200, "{op} {path}");
        resp.data.unwrap_or(Value::Null)
    }

    async fn status(&self, op: Operation, path: &str, body: Option<Value>) -> u16 {
        match self.call(op, path, body).await {
            Ok(resp) => resp.status,
            Err(err) => err.status(),
        }
    }

    async fn err(&self, op: Operation, path: &str, body: Option<Value>) -> LogicalError {
        match self.call(op, path, body).await {
            Ok(resp) => panic!("{op} {path}: expected an error, got {}", resp.status),
            Err(err) => err,
        }
    }

    async fn read_version(
        &self,
        path: &str,
        version: u64,
    ) -> Result<LogicalResponse, LogicalError> {
        let req = LogicalRequest::new(Operation::Read, path)
            .with_token(self.root.as_str())
            .with_query("version", version.to_string());
        self.logical.handle(req).await
    }

    async fn create_token(&self, body: Value) -> (String, Value) {
        let resp = self
            .ok(Operation::Update, "auth/token/create", Some(body))
            .await;
        let auth = resp.auth.expect("auth block");
        (auth["client_token"].as_str().unwrap().to_owned(), auth)
    }

    /// A token `parent` creates with `body`: its id.
    async fn child_token(&self, parent: &str, body: Value) -> String {
        let resp = self
            .call_as(parent, Operation::Update, "auth/token/create", Some(body))
            .await
            .unwrap();
        resp.auth.expect("auth block")["client_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `auth/token/lookup-self` with `token`, which must succeed.
    async fn lookup_self(&self, token: &str) -> LogicalResponse {
        self.ok_as(token, Read, "auth/token/lookup-self", None)
            .await
    }

    /// `auth/token/lookup-self` with `token`, which must fail.
    async fn lookup_self_err(&self, token: &str) -> LogicalError {
        match self
            .call_as(token, Read, "auth/token/lookup-self", None)
            .await
        {
            Ok(resp) => panic!("lookup-self: expected an error, got {}", resp.status),
            Err(err) => err,
        }
    }

    /// The status `auth/token/lookup-self` with `token` fails with.
    async fn lookup_self_status(&self, token: &str) -> u16 {
        self.lookup_self_err(token).await.status()
    }

    /// The storage keys of the token store's entries (one per token).
    async fn token_entries(&self) -> Vec<String> {
        let mut ids = self.all_keys().await;
        ids.retain(|k| k.starts_with("sys/token/id/"));
        ids
    }

    /// Every key in storage, depth first.
    async fn all_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut folders = vec![String::new()];
        while let Some(folder) = folders.pop() {
            for child in self.storage.list(&folder).await.unwrap() {
                let full = format!("{folder}{child}");
                if child.ends_with('/') {
                    folders.push(full);
                } else {
                    out.push(full);
                }
            }
        }
        out.sort();
        out
    }
}

use Operation::{Delete, List, Patch, Read, Update};

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn missing_wrong_or_empty_token_is_403() {
    let f = fixture().await;
    f.logical
        .mount("secret", MountKind::KvV2, "")
        .await
        .unwrap();
    let anonymous = LogicalRequest::new(Read, "secret/data/x");
    let err = f.logical.handle(anonymous).await.unwrap_err();
    assert_eq!(err.status(), 403);
    assert_eq!(err.errors(), ["permission denied"]);
    for bad in [
        "",
        "hvs.nope",
        &f.root[..f.root.len() - 1],
        &"x".repeat(10_000),
    ] {
        let err = f
            .call_as(bad, Read, "secret/data/x", None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, LogicalError::PermissionDenied),
            "{bad:?}: {err}"
        );
    }
    assert!(matches!(
        f.logical.check_token("hvs.nope").await,
        Err(LogicalError::PermissionDenied)
    ));
}

#[tokio::test]
async fn root_token_lookup_self_and_custom_id() {
    let f = fixture().await;
    assert!(f.root.starts_with("hvs."), "{}", f.root);
    assert_eq!(f.root.len(), 28);
    let data = f.data(Read, "auth/token/lookup-self", None).await;
    assert_eq!(data["id"], f.root.as_str());
    assert_eq!(data["policies"], json!(["root"]));
    assert_eq!(data["path"], "auth/token/root");
    assert_eq!(data["display_name"], "root");
    assert_eq!(data["ttl"], 0);
    assert_eq!(data["expire_time"], Value::Null);
    assert_eq!(data["orphan"], true);
    assert_eq!(data["type"], "service");
    assert_eq!(data["accessor"].as_str().unwrap().len(), 24);
    assert!(data["creation_time"].as_i64().unwrap() > 1_600_000_000);

    let custom = f.logical.create_root_token(Some("root")).await.unwrap();
    assert_eq!(custom, "root");
    let entry = f.logical.check_token("root").await.unwrap();
    assert!(entry.is_root());
    assert_eq!(entry.display_name(), "root");
    // Re-creating the same id (a dev server restarted on the same storage)
    // replaces the old entry and keeps working.
    f.logical.create_root_token(Some("root")).await.unwrap();
    f.logical.check_token("root").await.unwrap();
    assert_eq!(
        f.logical
            .create_root_token(Some(""))
            .await
            .unwrap_err()
            .status(),
        400
    );
}

#[tokio::test]
async fn tokens_are_stored_only_as_salted_hashes() {
    let f = fixture().await;
    let (child, _) = f.create_token(json!({"ttl": "1h"})).await;
    let custom = f
        .logical
        .create_root_token(Some("my-dev-root-id"))
        .await
        .unwrap();
    for key in f.all_keys().await {
        let value = f.storage.get(&key).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&value);
        for token in [&f.root, &child, &custom] {
            assert!(!key.contains(token.as_str()), "token in key {key}");
            assert!(!text.contains(token.as_str()), "token in value of {key}");
        }
    }
    // Another store has another salt, so the same token hashes differently.
    let g = fixture().await;
    g.logical
        .create_root_token(Some("my-dev-root-id"))
        .await
        .unwrap();
    let ours: Vec<String> = f
        .all_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("sys/token/id/"))
        .collect();
    let theirs: Vec<String> = g
        .all_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("sys/token/id/"))
        .collect();
    assert!(ours.iter().all(|k| !theirs.contains(k)));
}

#[tokio::test]
async fn child_token_create_and_lookup_shapes() {
    let f = fixture().await;
    let (child, auth) = f
        .create_token(json!({
            "ttl": "1h",
            "display_name": "Web App",
            "meta": {"team": "payments"},
            "num_uses": 5,
        }))
        .await;
    assert!(child.starts_with("hvs."));
    assert_eq!(auth["policies"], json!(["root"]));
    assert_eq!(auth["token_policies"], json!(["root"]));
    assert_eq!(auth["metadata"], json!({"team": "payments"}));
    assert_eq!(auth["renewable"], true);
    assert_eq!(auth["token_type"], "service");
    assert_eq!(auth["orphan"], false);
    assert_eq!(auth["entity_id"], "");
    let lease = auth["lease_duration"].as_u64().unwrap();
    assert_eq!(lease, 3600, "ttl=1h reports exactly 3600 like Vault");
    assert_eq!(auth["accessor"].as_str().unwrap().len(), 24);

    let resp = f.lookup_self(&child).await;
    let data = resp.data.unwrap();
    assert_eq!(data["id"], child.as_str());
    assert_eq!(data["display_name"], "token-Web-App");
    assert_eq!(data["path"], "auth/token/create");
    assert_eq!(data["meta"], json!({"team": "payments"}));
    assert_eq!(data["num_uses"], 4, "the lookup itself spent one use");
    assert_eq!(data["creation_ttl"], 3600);
    assert!(data["ttl"].as_u64().unwrap() <= 3600);
    assert!(data["expire_time"].as_str().unwrap().ends_with('Z'));
    assert!(data["issue_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(data["orphan"], false);
    assert_eq!(data["accessor"], auth["accessor"]);

    // An orphan, and a token with the default TTL (768h, Vault's system max).
    let (_, orphan) = f.create_token(json!({"no_parent": true})).await;
    assert_eq!(orphan["orphan"], true);
    let lease = orphan["lease_duration"].as_u64().unwrap();
    assert!((2_764_790..=2_764_800).contains(&lease), "{lease}");
}

#[tokio::test]
async fn child_with_only_the_default_policy_gets_self_service() {
    let f = fixture().await;
    f.logical
        .mount("secret", MountKind::KvV2, "")
        .await
        .unwrap();
    let (dev, auth) = f
        .create_token(json!({"policies": ["dev"], "ttl": "10m"}))
        .await;
    assert_eq!(auth["policies"], json!(["default", "dev"]));
    for (op, path) in [
        (Read, "secret/data/x"),
        (Update, "auth/token/create"),
        (Read, "sys/mounts"),
        (Read, "sys/internal/ui/mounts/secret"),
    ] {
        let err = f
            .call_as(&dev, op, path, Some(json!({})))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 403, "{op} {path}");
    }
    f.lookup_self(&dev).await;
    f.ok_as(&dev, Update, "auth/token/renew-self", Some(json!({})))
        .await;
    let (no_default, auth) = f
        .create_token(json!({"policies": "a, b", "no_default_policy": true}))
        .await;
    assert_eq!(auth["policies"], json!(["a", "b"]));
    // Without the default policy not even the self-service paths are open.
    let err = f
        .call_as(&no_default, Update, "auth/token/revoke-self", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);
}

#[tokio::test]
async fn expired_token_is_denied_and_removed() {
    let f = fixture().await;
    let (child, auth) = f.create_token(json!({"ttl": "3s"})).await;
    assert!(auth["lease_duration"].as_u64().unwrap() <= 3);
    f.lookup_self(&child).await;
    let err = wait::until("the 3 s token is refused", EXPIRY_DEADLINE, || async {
        f.call_as(&child, Read, "auth/token/lookup-self", None)
            .await
            .err()
    })
    .await;
    assert!(matches!(err, LogicalError::PermissionDenied));
    // Only the root token's entry remains.
    let ids = f.token_entries().await;
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn child_ttl_never_outlives_its_parent() {
    let f = fixture().await;
    let (parent, _) = f.create_token(json!({"ttl": "2s"})).await;
    let resp = f
        .ok_as(
            &parent,
            Update,
            "auth/token/create",
            Some(json!({"ttl": "1h"})),
        )
        .await;
    let auth = resp.auth.unwrap();
    assert!(auth["lease_duration"].as_u64().unwrap() <= 2, "{auth}");
}

#[tokio::test]
async fn revoke_self_revokes_descendants() {
    let f = fixture().await;
    let (parent, _) = f.create_token(json!({"ttl": "1h"})).await;
    let child = f.child_token(&parent, json!({})).await;
    let grandchild = f.child_token(&child, json!({})).await;
    let (orphan, _) = f.create_token(json!({"no_parent": true})).await;
    let resp = f
        .ok_as(&parent, Update, "auth/token/revoke-self", None)
        .await;
    assert_eq!(resp.status, 204);
    assert!(resp.to_json("r").is_none());
    for gone in [&parent, &child, &grandchild] {
        assert_eq!(f.lookup_self_status(gone).await, 403);
    }
    f.lookup_self(&orphan).await;
    // Nothing of the revoked tree is left in storage: the root and the
    // orphan remain, with their accessors.
    let keys = f.all_keys().await;
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("sys/token/id/"))
            .count(),
        2
    );
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("sys/token/accessor/"))
            .count(),
        2
    );
    assert!(
        !keys.iter().any(|k| k.starts_with("sys/token/parent/")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn limited_use_token_is_revoked_after_last_use() {
    let f = fixture().await;
    let (token, _) = f.create_token(json!({"num_uses": 2})).await;
    let first = f.lookup_self(&token).await;
    assert_eq!(first.data.unwrap()["num_uses"], 1);
    let last = f.lookup_self(&token).await;
    assert_eq!(last.data.unwrap()["num_uses"], 0);
    assert_eq!(f.lookup_self_status(&token).await, 403);
}

#[tokio::test]
async fn concurrent_uses_of_a_limited_token_are_counted_once_each() {
    let f = Arc::new(fixture().await);
    let (token, _) = f.create_token(json!({"num_uses": 10})).await;
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let f = f.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            f.call_as(&token, Read, "auth/token/lookup-self", None)
                .await
                .is_ok()
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += usize::from(task.await.unwrap());
    }
    assert_eq!(granted, 10);
}

#[tokio::test]
async fn lookup_revoke_and_accessor_endpoints() {
    let f = fixture().await;
    let (token, auth) = f.create_token(json!({"ttl": "1h"})).await;
    let data = f
        .data(Update, "auth/token/lookup", Some(json!({"token": token})))
        .await;
    assert_eq!(data["id"], token.as_str());
    let accessor = auth["accessor"].as_str().unwrap();
    let data = f
        .data(
            Update,
            "auth/token/lookup-accessor",
            Some(json!({"accessor": accessor})),
        )
        .await;
    assert_eq!(data["id"], "");
    assert_eq!(data["accessor"], accessor);
    assert_eq!(
        f.status(
            Update,
            "auth/token/lookup",
            Some(json!({"token": "hvs.nope"}))
        )
        .await,
        403
    );
    assert_eq!(
        f.status(Update, "auth/token/revoke", Some(json!({"token": token})))
            .await,
        204
    );
    assert_eq!(f.lookup_self_status(&token).await, 403);
    let (second, auth) = f.create_token(json!({})).await;
    let accessor = auth["accessor"].as_str().unwrap();
    assert_eq!(
        f.status(
            Update,
            "auth/token/revoke-accessor",
            Some(json!({"accessor": accessor}))
        )
        .await,
        204
    );
    assert!(f.logical.check_token(&second).await.is_err());
}

#[tokio::test]
async fn renew_self_extends_the_ttl() {
    let f = fixture().await;
    let (token, _) = f.create_token(json!({"ttl": "10s"})).await;
    let resp = f
        .ok_as(
            &token,
            Update,
            "auth/token/renew-self",
            Some(json!({"increment": "1h"})),
        )
        .await;
    let lease = resp.auth.unwrap()["lease_duration"].as_u64().unwrap();
    assert!((3590..=3600).contains(&lease), "{lease}");
    let (fixed, _) = f
        .create_token(json!({"ttl": "1h", "renewable": false}))
        .await;
    let err = f
        .call_as(&fixed, Update, "auth/token/renew-self", Some(json!({})))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
    let (capped, _) = f
        .create_token(json!({"ttl": "10s", "explicit_max_ttl": "20s"}))
        .await;
    let resp = f
        .ok_as(
            &capped,
            Update,
            "auth/token/renew-self",
            Some(json!({"increment": "1h"})),
        )
        .await;
    assert!(resp.auth.unwrap()["lease_duration"].as_u64().unwrap() <= 20);
    // The root token has no TTL; renewing it is a no-op.
    let resp = f.ok(Update, "auth/token/renew-self", None).await;
    assert_eq!(resp.auth.unwrap()["lease_duration"], 0);
}

#[tokio::test]
async fn periodic_tokens_need_sudo_and_renew_to_their_period() {
    let f = fixture().await;
    let (periodic, auth) = f.create_token(json!({"period": "1h", "ttl": "5m"})).await;
    assert!((3590..=3600).contains(&auth["lease_duration"].as_u64().unwrap()));
    let looked = f
        .call_as(&periodic, Read, "auth/token/lookup-self", None)
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(looked["period"], 3600);
    // Every renewal grants the period, whatever the increment.
    let renewed = f
        .call_as(
            &periodic,
            Update,
            "auth/token/renew-self",
            Some(json!({"increment": "10s"})),
        )
        .await
        .unwrap();
    assert!((3590..=3600).contains(&renewed.auth.unwrap()["lease_duration"].as_u64().unwrap()));
    // explicit_max_ttl still caps it.
    let (_, capped) = f
        .create_token(json!({"period": "1h", "explicit_max_ttl": "100s"}))
        .await;
    assert!(capped["lease_duration"].as_u64().unwrap() <= 100);
    // A plain token shows no period.
    let (plain, _) = f.create_token(json!({"ttl": "1h"})).await;
    let looked = f
        .call_as(&plain, Read, "auth/token/lookup-self", None)
        .await
        .unwrap()
        .data
        .unwrap();
    assert!(looked.get("period").is_none(), "{looked}");
    // Without sudo on auth/token/create, Vault's refusal.
    f.ok(
        Update,
        "sys/policies/acl/creator",
        Some(json!({"policy": "path \"auth/token/create\" { capabilities = [\"update\"] }"})),
    )
    .await;
    let (creator, _) = f.create_token(json!({"policies": ["creator"]})).await;
    let err = f
        .call_as(
            &creator,
            Update,
            "auth/token/create",
            Some(json!({"period": "1h", "policies": ["creator"]})),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.to_string(),
        "root or sudo privileges required to create periodic token"
    );
}

#[tokio::test]
async fn token_accessors_are_listed_only_with_sudo() {
    let f = fixture().await;
    let (_, child) = f.create_token(json!({"ttl": "1h"})).await;
    let listed = f.data(List, "auth/token/accessors", None).await;
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "root's and the child's: {listed}");
    assert!(keys.contains(&child["accessor"]), "{listed}");
    // Revoked tokens drop out.
    f.ok(
        Update,
        "auth/token/revoke-accessor",
        Some(json!({"accessor": child["accessor"]})),
    )
    .await;
    let listed = f.data(List, "auth/token/accessors/", None).await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1, "{listed}");
    // `list` alone is not enough: the path is root-protected.
    for (name, caps) in [
        ("lister", r#"["list"]"#),
        ("auditor", r#"["list", "sudo"]"#),
    ] {
        f.ok(
            Update,
            &format!("sys/policies/acl/{name}"),
            Some(json!({
                "policy": format!("path \"auth/token/accessors\" {{ capabilities = {caps} }}")
            })),
        )
        .await;
    }
    let (lister, _) = f.create_token(json!({"policies": ["lister"]})).await;
    let err = f
        .call_as(&lister, List, "auth/token/accessors", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);
    let (auditor, _) = f.create_token(json!({"policies": ["auditor"]})).await;
    let listed = f
        .call_as(&auditor, List, "auth/token/accessors", None)
        .await
        .unwrap();
    assert_eq!(listed.data.unwrap()["keys"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn token_create_validation() {
    let f = fixture().await;
    let (_, auth) = f.create_token(json!({"id": "my-token"})).await;
    assert_eq!(auth["client_token"], "my-token");
    let err = f
        .err(Update, "auth/token/create", Some(json!({"id": "my-token"})))
        .await;
    assert_eq!(err.to_string(), "cannot create a token with a duplicate ID");
    for (body, needle) in [
        (json!({"id": "a.b"}), "'.'"),
        (json!({"ttl": [1]}), "\"ttl\""),
        (json!({"ttl": "forever"}), "\"ttl\""),
        (json!({"policies": 5}), "\"policies\""),
        (json!({"num_uses": -1}), "\"num_uses\""),
        (json!({"meta": "x"}), "\"meta\""),
        (json!({"type": "batch"}), "batch"),
        (json!({"no_parent": "maybe"}), "\"no_parent\""),
    ] {
        let err = f.err(Update, "auth/token/create", Some(body.clone())).await;
        assert_eq!(err.status(), 400, "{body}");
        assert!(err.to_string().contains(needle), "{body}: {err}");
    }
    // What `bao token create -ttl=1h` sends: every field, most empty.
    let (_, auth) = f
        .create_token(json!({
            "policies": null, "meta": null, "no_parent": false, "no_default_policy": false,
            "renewable": null, "ttl": "1h", "type": "service", "explicit_max_ttl": "",
            "display_name": "", "num_uses": 0, "period": "", "entity_alias": ""
        }))
        .await;
    assert!((3590..=3600).contains(&auth["lease_duration"].as_u64().unwrap()));
    let resp = f
        .ok(Update, "auth/token/create", Some(json!({"bogus": 1})))
        .await;
    assert!(resp.warnings.len() == 1, "{:?}", resp.warnings);
    assert!(resp.warnings[0].contains("bogus"), "{:?}", resp.warnings);
    // Non-root parents may not pick ids, orphans or wider policies.
    let (dev, _) = f.create_token(json!({"policies": ["dev"]})).await;
    let err = f
        .call_as(&dev, Update, "auth/token/create", Some(json!({})))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);
    assert_eq!(f.status(Read, "auth/token/create", None).await, 405);
    assert_eq!(f.status(Read, "auth/token/nope", None).await, 404);
}

// ---------------------------------------------------------------- mounts

#[tokio::test]
async fn mount_enable_list_and_read() {
    let f = fixture().await;
    let data = f.data(Read, "sys/mounts", None).await;
    assert_eq!(
        data.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["sys/"]
    );

    for (path, body) in [
        (
            "sys/mounts/kv1",
            json!({"type": "kv", "description": "v1 store"}),
        ),
        (
            "sys/mounts/kv2",
            json!({"type": "kv", "options": {"version": "2"}}),
        ),
        ("sys/mounts/kv2b", json!({"type": "kv-v2"})),
        (
            "sys/mounts/kvnum",
            json!({"type": "kv", "options": {"version": 2}}),
        ),
        ("sys/mounts/legacy/", json!({"type": "generic"})),
        (
            "sys/mounts/a/b",
            json!({"type": "kv", "config": {"default_lease_ttl": "1h"}}),
        ),
    ] {
        let resp = f.ok(Update, path, Some(body)).await;
        assert_eq!(resp.status, 204, "{path}");
    }
    let resp = f.ok(Read, "sys/mounts", None).await;
    assert!(resp.data_at_top_level);
    let data = resp.data.clone().unwrap();
    let kv1 = &data["kv1/"];
    assert_eq!(kv1["type"], "kv");
    assert_eq!(kv1["description"], "v1 store");
    assert_eq!(kv1["options"], json!({}));
    assert_eq!(kv1["deprecation_status"], "supported");
    assert_eq!(kv1["config"]["default_lease_ttl"], 0);
    assert_eq!(kv1["local"], false);
    assert_eq!(kv1["seal_wrap"], false);
    assert!(kv1["accessor"].as_str().unwrap().starts_with("kv_"));
    assert_eq!(kv1["uuid"].as_str().unwrap().len(), 36);
    assert_eq!(data["kv2/"]["options"], json!({"version": "2"}));
    assert_eq!(data["kv2b/"]["type"], "kv");
    assert_eq!(data["kv2b/"]["options"], json!({"version": "2"}));
    assert_eq!(data["kvnum/"]["options"], json!({"version": "2"}));
    assert_eq!(data["legacy/"]["type"], "generic");
    assert_eq!(data["a/b/"]["config"]["default_lease_ttl"], 3600);
    // The envelope repeats the mounts at the top level, like Vault.
    let body = resp.to_json("req-1").unwrap();
    assert_eq!(body["kv2/"], data["kv2/"]);
    assert_eq!(body["data"]["kv2/"], data["kv2/"]);
    assert_eq!(body["request_id"], "req-1");

    let one = f.data(Read, "sys/mounts/kv2", None).await;
    assert_eq!(one["options"]["version"], "2");
    assert_eq!(f.status(Read, "sys/mounts/none", None).await, 400);
}

#[tokio::test]
async fn mount_enable_errors() {
    let f = fixture().await;
    f.ok(Update, "sys/mounts/secret", Some(json!({"type": "kv"})))
        .await;
    let cases = [
        (
            "sys/mounts/secret",
            json!({"type": "kv"}),
            "path is already in use at secret/",
        ),
        (
            "sys/mounts/secret/sub",
            json!({"type": "kv"}),
            "path is already in use at secret/",
        ),
        (
            "sys/mounts/sys",
            json!({"type": "kv"}),
            "cannot mount \"sys/\"",
        ),
        ("sys/mounts/auth/x", json!({"type": "kv"}), "cannot mount"),
        (
            "sys/mounts/cubbyhole",
            json!({"type": "kv"}),
            "cannot mount",
        ),
        (
            "sys/mounts/x",
            json!({"type": "pki"}),
            "plugin not found in the catalog: pki",
        ),
        ("sys/mounts/x", json!({}), "backend type must be specified"),
        ("sys/mounts/x", json!({"type": ["kv"]}), "\"type\""),
        (
            "sys/mounts/x",
            json!({"type": "kv", "options": {"version": "3"}}),
            "invalid KV version",
        ),
        (
            "sys/mounts/x",
            json!({"type": "kv", "options": "2"}),
            "\"options\"",
        ),
        (
            "sys/mounts/x",
            json!({"type": "kv", "config": {"max_lease_ttl": "soon"}}),
            "max_lease_ttl",
        ),
        (
            "sys/mounts/a//b",
            json!({"type": "kv"}),
            "invalid mount path",
        ),
    ];
    for (path, body, needle) in cases {
        let err = f.err(Update, path, Some(body.clone())).await;
        assert_eq!(err.status(), 400, "{path} {body}: {err}");
        assert!(err.to_string().contains(needle), "{path} {body}: {err}");
    }
    f.ok(
        Update,
        "sys/mounts/parent/child",
        Some(json!({"type": "kv"})),
    )
    .await;
    let err = f
        .err(Update, "sys/mounts/parent", Some(json!({"type": "kv"})))
        .await;
    assert!(
        err.to_string()
            .contains("path is already in use at parent/child/"),
        "{err}"
    );
    assert_eq!(f.status(List, "sys/mounts", None).await, 405);
    assert!(matches!(
        f.logical.mount("secret/", MountKind::KvV2, "").await,
        Err(LogicalError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn disable_removes_the_engine_data() {
    let f = fixture().await;
    f.ok(Update, "sys/mounts/kv", Some(json!({"type": "kv-v2"})))
        .await;
    f.ok(Update, "kv/data/a", Some(json!({"data": {"k": "v"}})))
        .await;
    f.ok(Update, "kv/data/b/c", Some(json!({"data": {"k": "v"}})))
        .await;
    f.ok(Update, "kv/config", Some(json!({"max_versions": 3})))
        .await;
    let uuid = f.data(Read, "sys/mounts/kv", None).await["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        f.all_keys()
            .await
            .iter()
            .any(|k| k.starts_with(&format!("logical/{uuid}/")))
    );

    assert_eq!(f.status(Delete, "sys/mounts/kv", None).await, 204);
    assert!(!f.all_keys().await.iter().any(|k| k.starts_with("logical/")));
    assert_eq!(f.status(Read, "kv/data/a", None).await, 404);
    // Disabling again is fine (Vault: "if it existed").
    assert_eq!(f.status(Delete, "sys/mounts/kv", None).await, 204);
    assert_eq!(f.status(Delete, "sys/mounts/sys", None).await, 400);
    // Re-enabling starts empty.
    f.ok(Update, "sys/mounts/kv", Some(json!({"type": "kv-v2"})))
        .await;
    assert_eq!(f.status(Read, "kv/data/a", None).await, 404);
}

#[tokio::test]
async fn tune_reads_and_updates_mount_settings() {
    let f = fixture().await;
    f.ok(
        Update,
        "sys/mounts/kv",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    let tune = f.data(Read, "sys/mounts/kv/tune", None).await;
    assert_eq!(tune["default_lease_ttl"], 2_764_800);
    assert_eq!(tune["max_lease_ttl"], 2_764_800);
    assert_eq!(tune["options"]["version"], "2");
    f.ok(
        Update,
        "sys/mounts/kv/tune",
        Some(json!({"description": "tuned", "default_lease_ttl": "1h"})),
    )
    .await;
    let tune = f.data(Read, "sys/mounts/kv/tune", None).await;
    assert_eq!(tune["default_lease_ttl"], 3600);
    assert_eq!(tune["description"], "tuned");
    let err = f
        .err(
            Update,
            "sys/mounts/kv/tune",
            Some(json!({"options": {"version": "1"}})),
        )
        .await;
    assert_eq!(err.status(), 400);
    assert_eq!(f.status(Read, "sys/mounts/nope/tune", None).await, 400);
}

#[tokio::test]
async fn ui_mounts_tell_kv_clients_the_version() {
    let f = fixture().await;
    f.logical
        .mount("secret", MountKind::KvV2, "key/value secret storage")
        .await
        .unwrap();
    f.logical.mount("kv", MountKind::KvV1, "").await.unwrap();
    for path in [
        "sys/internal/ui/mounts/secret/foo/bar",
        "sys/internal/ui/mounts/secret",
        "sys/internal/ui/mounts/secret/",
    ] {
        let data = f.data(Read, path, None).await;
        assert_eq!(data["type"], "kv", "{path}");
        assert_eq!(data["options"]["version"], "2");
        assert_eq!(data["path"], "secret/");
        assert_eq!(data["description"], "key/value secret storage");
    }
    let data = f.data(Read, "sys/internal/ui/mounts/kv/x", None).await;
    assert_eq!(data["options"]["version"], "1");
    assert_eq!(data["path"], "kv/");
    let err = f
        .err(Read, "sys/internal/ui/mounts/nothing/here", None)
        .await;
    assert_eq!(err.status(), 403);
    assert!(
        err.to_string()
            .contains("preflight capability check returned 403"),
        "{err}"
    );
    assert!(err.to_string().contains("\"nothing/here/\""), "{err}");
    assert_eq!(f.status(Read, "sys/internal/ui/mounts//", None).await, 400);
    let all = f.data(Read, "sys/internal/ui/mounts", None).await;
    assert!(all["secret"]["secret/"].is_object());
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_operations_405() {
    let f = fixture().await;
    f.logical
        .mount("secret", MountKind::KvV2, "")
        .await
        .unwrap();
    let err = f.err(Read, "nomount/foo", None).await;
    assert_eq!(err.status(), 404);
    assert_eq!(
        err.errors(),
        ["no handler for route \"nomount/foo\". route entry not found."]
    );
    assert_eq!(f.status(Read, "sys/bogus", None).await, 404);
    assert_eq!(f.status(Read, "auth/userpass/login", None).await, 404);
    let resp = f.ok(Read, "secret/foo", None).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.data, None);
    assert!(resp.warnings[0].starts_with("Invalid path for a versioned K/V"));
    let err = f.err(List, "secret/data/foo", None).await;
    assert_eq!(err.status(), 405);
    assert_eq!(
        err.errors(),
        ["1 error occurred:\n\t* unsupported operation\n\n"]
    );
    assert_eq!(
        f.err(Read, "sys/bogus", None).await.errors(),
        ["1 error occurred:\n\t* unsupported path\n\n"]
    );
    assert_eq!(f.status(Read, "secret/data/", None).await, 404);
    assert_eq!(f.status(Read, "secret/metadata/", None).await, 404);
    let err = f
        .err(Update, "secret/data/", Some(json!({"data": {}})))
        .await;
    assert_eq!(err.to_string(), "cannot write to a path ending in '/'");
    assert_eq!(f.status(Read, "secret/destroy/foo", None).await, 405);
}

// ---------------------------------------------------------------- KV v1

#[tokio::test]
async fn kv_v1_lifecycle() {
    let f = fixture().await;
    f.logical.mount("kv", MountKind::KvV1, "").await.unwrap();
    let resp = f
        .ok(
            Update,
            "kv/app/db",
            Some(json!({"user": "admin", "port": 5432})),
        )
        .await;
    assert_eq!(resp.status, 204);
    f.ok(Update, "kv/app/api", Some(json!({"key": "k"}))).await;
    f.ok(Update, "kv/top", Some(json!({"x": "y"}))).await;

    let resp = f.ok(Read, "kv/app/db", None).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.data, Some(json!({"user": "admin", "port": 5432})));
    assert_eq!(resp.lease_duration, 2_764_800);
    let body = resp.to_json("id").unwrap();
    assert_eq!(body["lease_duration"], 2_764_800);
    assert_eq!(body["data"]["user"], "admin");
    assert_eq!(body["auth"], Value::Null);
    assert_eq!(body["warnings"], Value::Null);

    // Overwrite replaces the whole object.
    f.ok(Update, "kv/app/db", Some(json!({"user": "root"})))
        .await;
    assert_eq!(
        f.data(Read, "kv/app/db", None).await,
        json!({"user": "root"})
    );

    assert_eq!(
        f.data(List, "kv", None).await,
        json!({"keys": ["app/", "top"]})
    );
    assert_eq!(
        f.data(List, "kv/", None).await,
        json!({"keys": ["app/", "top"]})
    );
    assert_eq!(
        f.data(List, "kv/app", None).await,
        json!({"keys": ["api", "db"]})
    );
    assert_eq!(
        f.data(List, "kv/app/", None).await,
        json!({"keys": ["api", "db"]})
    );
    let err = f.err(List, "kv/none/", None).await;
    assert_eq!(err.status(), 404);
    assert!(err.errors().is_empty());

    assert_eq!(f.status(Delete, "kv/app/db", None).await, 204);
    let err = f.err(Read, "kv/app/db", None).await;
    assert!(matches!(err, LogicalError::NotFound(_)));
    assert!(err.errors().is_empty());
    assert_eq!(f.status(Delete, "kv/app/db", None).await, 204);

    // A "ttl" field becomes the lease duration, as in Vault.
    f.ok(Update, "kv/leased", Some(json!({"ttl": "1h", "v": 1})))
        .await;
    assert_eq!(f.ok(Read, "kv/leased", None).await.lease_duration, 3600);
}

#[tokio::test]
async fn kv_v1_bad_requests() {
    let f = fixture().await;
    f.logical.mount("kv", MountKind::KvV1, "").await.unwrap();
    let err = f.err(Update, "kv/x", None).await;
    assert_eq!(err.to_string(), "missing data fields");
    assert_eq!(f.status(Update, "kv/x", Some(json!({}))).await, 400);
    assert_eq!(
        f.status(Update, "kv/a//b", Some(json!({"a": 1}))).await,
        400
    );
    assert_eq!(
        f.status(Update, "kv/a/../b", Some(json!({"a": 1}))).await,
        400
    );
    assert_eq!(f.status(Update, "kv", Some(json!({"a": 1}))).await, 400);
    assert_eq!(f.status(Patch, "kv/x", Some(json!({"a": 1}))).await, 405);
    assert_eq!(f.status(Read, "kv/", None).await, 404);
}

// ---------------------------------------------------------------- KV v2

async fn kv2() -> Fixture {
    let f = fixture().await;
    f.logical
        .mount("secret", MountKind::KvV2, "")
        .await
        .unwrap();
    f
}

#[tokio::test]
async fn kv_v2_write_and_read_versions() {
    let f = kv2().await;
    let v1 = f
        .data(
            Update,
            "secret/data/app",
            Some(json!({"data": {"pw": "one"}})),
        )
        .await;
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["deletion_time"], "");
    assert_eq!(v1["destroyed"], false);
    assert_eq!(v1["custom_metadata"], Value::Null);
    let created = v1["created_time"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    assert!(created.ends_with('Z'));

    let v2 = f
        .data(
            Update,
            "secret/data/app",
            Some(json!({"data": {"pw": "two"}, "options": {}})),
        )
        .await;
    assert_eq!(v2["version"], 2);

    let latest = f.data(Read, "secret/data/app", None).await;
    assert_eq!(latest["data"], json!({"pw": "two"}));
    assert_eq!(latest["metadata"]["version"], 2);
    assert_eq!(latest["metadata"]["deletion_time"], "");
    let old = f
        .read_version("secret/data/app", 1)
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(old["data"], json!({"pw": "one"}));
    assert_eq!(old["metadata"]["version"], 1);
    let latest_again = f
        .read_version("secret/data/app", 0)
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(latest_again["metadata"]["version"], 2);

    let missing = f.read_version("secret/data/app", 9).await.unwrap_err();
    assert!(matches!(missing, LogicalError::NotFound(_)));
    assert!(matches!(
        f.err(Read, "secret/data/nothing", None).await,
        LogicalError::NotFound(_)
    ));
    let bad = LogicalRequest::new(Read, "secret/data/app")
        .with_token(f.root.as_str())
        .with_query("version", "two");
    assert_eq!(f.logical.handle(bad).await.unwrap_err().status(), 400);
}

#[tokio::test]
async fn kv_v2_request_validation() {
    let f = kv2().await;
    for (body, needle) in [
        (json!({}), "no data provided"),
        (json!({"data": "x"}), "\"data\""),
        (json!({"data": [1]}), "\"data\""),
        (json!({"data": {}, "options": 1}), "\"options\""),
        (json!({"data": {}, "options": {"cas": "x"}}), "\"cas\""),
    ] {
        let err = f.err(Update, "secret/data/k", Some(body.clone())).await;
        assert_eq!(err.status(), 400, "{body}");
        assert!(err.to_string().contains(needle), "{body}: {err}");
    }
    assert_eq!(
        f.status(Update, "secret/data/", Some(json!({"data": {}})))
            .await,
        400
    );
    assert_eq!(
        f.status(
            Update,
            "secret/metadata/k",
            Some(json!({"max_versions": "many"}))
        )
        .await,
        400
    );
    assert_eq!(
        f.status(
            Update,
            "secret/metadata/k",
            Some(json!({"custom_metadata": {"a": {"b": 1}}}))
        )
        .await,
        400
    );
    assert_eq!(
        f.status(Update, "secret/delete/k", Some(json!({}))).await,
        400
    );
    assert_eq!(
        f.status(Update, "secret/destroy/k", Some(json!({"versions": ["x"]})))
            .await,
        400
    );
    let resp = f
        .ok(
            Update,
            "secret/data/k",
            Some(json!({"data": {"a": 1}, "extra": true})),
        )
        .await;
    assert!(resp.warnings.iter().any(|w| w.contains("extra")));
}

#[tokio::test]
async fn kv_v2_check_and_set() {
    let f = kv2().await;
    let write = |cas: u64, v: &str| json!({"data": {"v": v}, "options": {"cas": cas}});
    // cas 0: only create.
    f.ok(Update, "secret/data/c", Some(write(0, "a"))).await;
    let err = f.err(Update, "secret/data/c", Some(write(0, "b"))).await;
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.to_string(),
        "check-and-set parameter did not match the current version"
    );
    f.ok(Update, "secret/data/c", Some(write(1, "b"))).await;
    assert_eq!(
        f.status(Update, "secret/data/c", Some(write(1, "c"))).await,
        400
    );

    // cas_required on the key.
    f.ok(
        Update,
        "secret/metadata/c",
        Some(json!({"cas_required": true})),
    )
    .await;
    let err = f
        .err(Update, "secret/data/c", Some(json!({"data": {"v": "x"}})))
        .await;
    assert_eq!(
        err.to_string(),
        "check-and-set parameter required for this call"
    );
    f.ok(Update, "secret/data/c", Some(write(2, "c"))).await;

    // cas_required on the mount.
    f.ok(Update, "secret/config", Some(json!({"cas_required": true})))
        .await;
    assert_eq!(
        f.status(Update, "secret/data/other", Some(json!({"data": {"v": 1}})))
            .await,
        400
    );
    f.ok(Update, "secret/data/other", Some(write(0, "x"))).await;
}

#[tokio::test]
async fn kv_v2_delete_undelete_destroy() {
    let f = kv2().await;
    for v in ["a", "b", "c"] {
        f.ok(Update, "secret/data/d", Some(json!({"data": {"v": v}})))
            .await;
    }
    // DELETE data/ soft-deletes the latest version.
    assert_eq!(f.status(Delete, "secret/data/d", None).await, 204);
    let resp = f.ok(Read, "secret/data/d", None).await;
    assert_eq!(resp.status, 404);
    let data = resp.data.clone().unwrap();
    assert_eq!(data["data"], Value::Null);
    assert_eq!(data["metadata"]["version"], 3);
    assert_ne!(data["metadata"]["deletion_time"], "");
    assert_eq!(data["metadata"]["destroyed"], false);
    let body = resp.to_json("r").unwrap();
    assert_eq!(body["data"]["data"], Value::Null);
    // Older versions are still readable.
    let v2 = f.read_version("secret/data/d", 2).await.unwrap();
    assert_eq!(v2.data.unwrap()["data"]["v"], "b");

    // delete/ with explicit versions.
    f.ok(Update, "secret/delete/d", Some(json!({"versions": [1, 2]})))
        .await;
    assert_eq!(
        f.read_version("secret/data/d", 1).await.unwrap().status,
        404
    );
    // undelete/ restores.
    f.ok(
        Update,
        "secret/undelete/d",
        Some(json!({"versions": [1, 3]})),
    )
    .await;
    assert_eq!(f.data(Read, "secret/data/d", None).await["data"]["v"], "c");
    assert_eq!(
        f.read_version("secret/data/d", 1)
            .await
            .unwrap()
            .data
            .unwrap()["data"]["v"],
        "a"
    );
    assert_eq!(
        f.read_version("secret/data/d", 2).await.unwrap().status,
        404
    );

    // destroy/ removes the data for good; undelete cannot bring it back.
    f.ok(Update, "secret/destroy/d", Some(json!({"versions": "1,3"})))
        .await;
    let resp = f.ok(Read, "secret/data/d", None).await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.data.unwrap()["metadata"]["destroyed"], true);
    f.ok(Update, "secret/undelete/d", Some(json!({"versions": [3]})))
        .await;
    assert_eq!(f.ok(Read, "secret/data/d", None).await.status, 404);
    let meta = f.data(Read, "secret/metadata/d", None).await;
    assert_eq!(meta["versions"]["1"]["destroyed"], true);
    assert_eq!(meta["versions"]["3"]["destroyed"], true);
    assert_eq!(meta["versions"]["2"]["destroyed"], false);
    // Destroyed data is gone from storage: only version 2's data remains.
    let version_keys: Vec<String> = f
        .all_keys()
        .await
        .into_iter()
        .filter(|k| k.contains("/versions/"))
        .collect();
    assert_eq!(version_keys.len(), 1, "{version_keys:?}");
    assert!(version_keys[0].ends_with("/2"));

    // Operations on keys that do not exist succeed quietly, like Vault.
    assert_eq!(f.status(Delete, "secret/data/none", None).await, 204);
    assert_eq!(
        f.status(
            Update,
            "secret/destroy/none",
            Some(json!({"versions": [1]}))
        )
        .await,
        204
    );
}

#[tokio::test]
async fn kv_v2_metadata_read_write_list_delete() {
    let f = kv2().await;
    f.ok(
        Update,
        "secret/data/app/db",
        Some(json!({"data": {"a": 1}})),
    )
    .await;
    f.ok(
        Update,
        "secret/data/app/db",
        Some(json!({"data": {"a": 2}})),
    )
    .await;
    f.ok(
        Update,
        "secret/data/app/api",
        Some(json!({"data": {"a": 1}})),
    )
    .await;
    f.ok(Update, "secret/data/top", Some(json!({"data": {"a": 1}})))
        .await;

    let meta = f.data(Read, "secret/metadata/app/db", None).await;
    assert_eq!(meta["current_version"], 2);
    assert_eq!(meta["oldest_version"], 0, "0 until pruning, like Vault");
    assert_eq!(meta["max_versions"], 0);
    assert_eq!(meta["cas_required"], false);
    assert_eq!(meta["delete_version_after"], "0s");
    assert_eq!(meta["custom_metadata"], Value::Null);
    assert_eq!(meta["versions"].as_object().unwrap().len(), 2);
    assert_eq!(meta["versions"]["1"]["deletion_time"], "");
    assert!(meta["created_time"].as_str().unwrap() <= meta["updated_time"].as_str().unwrap());

    f.ok(
        Update,
        "secret/metadata/app/db",
        Some(json!({"max_versions": 5, "custom_metadata": {"owner": "ops"}, "delete_version_after": "1h"})),
    )
    .await;
    let meta = f.data(Read, "secret/metadata/app/db", None).await;
    assert_eq!(meta["max_versions"], 5);
    assert_eq!(meta["custom_metadata"], json!({"owner": "ops"}));
    assert_eq!(meta["delete_version_after"], "1h0m0s");
    // custom_metadata shows up in data reads too.
    let read = f.data(Read, "secret/data/app/db", None).await;
    assert_eq!(read["metadata"]["custom_metadata"], json!({"owner": "ops"}));
    // PATCH merges custom_metadata.
    f.ok(
        Patch,
        "secret/metadata/app/db",
        Some(json!({"custom_metadata": {"tier": "1"}})),
    )
    .await;
    let meta = f.data(Read, "secret/metadata/app/db", None).await;
    assert_eq!(
        meta["custom_metadata"],
        json!({"owner": "ops", "tier": "1"})
    );
    f.ok(
        Patch,
        "secret/metadata/app/db",
        Some(json!({"custom_metadata": {"owner": null}, "max_versions": 7})),
    )
    .await;
    let meta = f.data(Read, "secret/metadata/app/db", None).await;
    assert_eq!(meta["custom_metadata"], json!({"tier": "1"}));
    assert_eq!(meta["max_versions"], 7);
    assert_eq!(meta["cas_required"], false);
    assert_eq!(
        f.status(Patch, "secret/metadata/none", Some(json!({})))
            .await,
        404
    );

    // Metadata can exist before any version.
    f.ok(
        Update,
        "secret/metadata/pre",
        Some(json!({"max_versions": 2})),
    )
    .await;
    let meta = f.data(Read, "secret/metadata/pre", None).await;
    assert_eq!(meta["current_version"], 0);
    assert_eq!(f.status(Read, "secret/data/pre", None).await, 404);

    assert_eq!(
        f.data(List, "secret/metadata", None).await,
        json!({"keys": ["app/", "pre", "top"]})
    );
    assert_eq!(
        f.data(List, "secret/metadata/app/", None).await,
        json!({"keys": ["api", "db"]})
    );
    assert_eq!(f.status(List, "secret/metadata/none/", None).await, 404);

    assert_eq!(f.status(Delete, "secret/metadata/app/db", None).await, 204);
    assert_eq!(f.status(Read, "secret/metadata/app/db", None).await, 404);
    assert_eq!(f.status(Read, "secret/data/app/db", None).await, 404);
    assert_eq!(
        f.data(List, "secret/metadata/app", None).await,
        json!({"keys": ["api"]})
    );
    // All of db's version data went with it.
    let versions = f
        .all_keys()
        .await
        .into_iter()
        .filter(|k| k.contains("/versions/"))
        .count();
    assert_eq!(versions, 2, "api and top keep one version each");
}

#[tokio::test]
async fn kv_v2_max_versions_prunes_oldest() {
    let f = kv2().await;
    f.ok(
        Update,
        "secret/metadata/p",
        Some(json!({"max_versions": 3})),
    )
    .await;
    for i in 1..=5 {
        f.ok(Update, "secret/data/p", Some(json!({"data": {"i": i}})))
            .await;
    }
    let meta = f.data(Read, "secret/metadata/p", None).await;
    assert_eq!(meta["current_version"], 5);
    assert_eq!(meta["oldest_version"], 3);
    let versions: Vec<&String> = meta["versions"].as_object().unwrap().keys().collect();
    assert_eq!(versions, ["3", "4", "5"]);
    assert!(matches!(
        f.read_version("secret/data/p", 2).await,
        Err(LogicalError::NotFound(_))
    ));
    assert_eq!(
        f.read_version("secret/data/p", 3)
            .await
            .unwrap()
            .data
            .unwrap()["data"]["i"],
        3
    );
    let stored = f
        .all_keys()
        .await
        .into_iter()
        .filter(|k| k.contains("/versions/"))
        .count();
    assert_eq!(stored, 3);

    // Default: 10 versions; the mount config overrides the default.
    for i in 1..=12 {
        f.ok(Update, "secret/data/q", Some(json!({"data": {"i": i}})))
            .await;
    }
    let meta = f.data(Read, "secret/metadata/q", None).await;
    assert_eq!(meta["oldest_version"], 3);
    assert_eq!(meta["versions"].as_object().unwrap().len(), 10);
    f.ok(Update, "secret/config", Some(json!({"max_versions": 2})))
        .await;
    f.ok(Update, "secret/data/q", Some(json!({"data": {"i": 13}})))
        .await;
    let meta = f.data(Read, "secret/metadata/q", None).await;
    assert_eq!(meta["oldest_version"], 12);
    assert_eq!(meta["versions"].as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn kv_v2_config_round_trip() {
    let f = kv2().await;
    let cfg = f.data(Read, "secret/config", None).await;
    assert_eq!(
        cfg,
        json!({"cas_required": false, "delete_version_after": "0s", "max_versions": 0})
    );
    f.ok(
        Update,
        "secret/config",
        Some(json!({"max_versions": "7", "cas_required": "true", "delete_version_after": 90})),
    )
    .await;
    let cfg = f.data(Read, "secret/config", None).await;
    assert_eq!(
        cfg,
        json!({"cas_required": true, "delete_version_after": "1m30s", "max_versions": 7})
    );
    assert_eq!(
        f.status(Update, "secret/config", Some(json!({"max_versions": -1})))
            .await,
        400
    );
    assert_eq!(f.status(Delete, "secret/config", None).await, 405);
}

#[tokio::test]
async fn kv_v2_delete_version_after_expires_versions() {
    let f = kv2().await;
    f.ok(
        Update,
        "secret/metadata/t",
        Some(json!({"delete_version_after": "3s"})),
    )
    .await;
    let v = f
        .data(Update, "secret/data/t", Some(json!({"data": {"a": 1}})))
        .await;
    assert_ne!(v["deletion_time"], "");
    assert_eq!(f.ok(Read, "secret/data/t", None).await.status, 200);
    wait::until(
        "version 1 is deleted after 3 s",
        EXPIRY_DEADLINE,
        || async { f.ok(Read, "secret/data/t", None).await.status == 404 },
    )
    .await;
    // Undelete clears the scheduled deletion.
    f.ok(Update, "secret/undelete/t", Some(json!({"versions": [1]})))
        .await;
    assert_eq!(f.ok(Read, "secret/data/t", None).await.status, 200);
}

#[tokio::test]
async fn kv_v2_patch_and_subkeys() {
    let f = kv2().await;
    assert_eq!(
        f.status(Patch, "secret/data/m", Some(json!({"data": {"a": 1}})))
            .await,
        404
    );
    f.ok(
        Update,
        "secret/data/m",
        Some(json!({"data": {"a": 1, "b": {"c": 2}, "d": 3}})),
    )
    .await;
    let v = f
        .data(
            Patch,
            "secret/data/m",
            Some(json!({"data": {"a": 9, "b": {"e": 4}, "d": null}})),
        )
        .await;
    assert_eq!(v["version"], 2);
    assert_eq!(
        f.data(Read, "secret/data/m", None).await["data"],
        json!({"a": 9, "b": {"c": 2, "e": 4}})
    );
    let sub = f.data(Read, "secret/subkeys/m", None).await;
    assert_eq!(
        sub["subkeys"],
        json!({"a": null, "b": {"c": null, "e": null}})
    );
    assert_eq!(sub["metadata"]["version"], 2);
    f.ok(Delete, "secret/data/m", None).await;
    assert_eq!(
        f.status(Patch, "secret/data/m", Some(json!({"data": {"a": 1}})))
            .await,
        404
    );
}

#[tokio::test]
async fn kv_v2_concurrent_writes_never_share_a_version() {
    let f = Arc::new(kv2().await);
    f.ok(
        Update,
        "secret/metadata/hot",
        Some(json!({"max_versions": 100})),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let v = f
                .data(
                    Update,
                    "secret/data/hot",
                    Some(json!({"data": {"writer": i}})),
                )
                .await;
            (v["version"].as_u64().unwrap(), i)
        }));
    }
    let mut seen = std::collections::BTreeMap::new();
    for task in tasks {
        let (version, writer) = task.await.unwrap();
        assert!(
            seen.insert(version, writer).is_none(),
            "version {version} issued twice"
        );
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    // Each version holds the data of the writer it was issued to.
    for (version, writer) in seen {
        let data = f
            .read_version("secret/data/hot", version)
            .await
            .unwrap()
            .data
            .unwrap();
        assert_eq!(data["data"]["writer"], writer);
    }
    assert_eq!(
        f.data(Read, "secret/metadata/hot", None).await["current_version"],
        60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_v2_concurrent_writes_on_many_threads() {
    let f = Arc::new(kv2().await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            f.data(Update, "secret/data/mt", Some(json!({"data": {"i": i}})))
                .await["version"]
                .as_u64()
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=40).collect::<Vec<_>>());
}

// ---------------------------------------------------------------- persistence

#[tokio::test]
async fn a_new_router_over_the_same_storage_sees_everything() {
    let f = fixture().await;
    f.ok(Update, "sys/mounts/secret", Some(json!({"type": "kv-v2"})))
        .await;
    f.ok(Update, "sys/mounts/kv", Some(json!({"type": "kv"})))
        .await;
    f.ok(Update, "secret/data/a", Some(json!({"data": {"v": 1}})))
        .await;
    f.ok(Update, "secret/data/a", Some(json!({"data": {"v": 2}})))
        .await;
    f.ok(Update, "kv/b", Some(json!({"v": 3}))).await;
    let (child, _) = f.create_token(json!({"ttl": "1h"})).await;

    let reopened = Logical::new(f.storage.clone()).await.unwrap();
    let g = Fixture {
        storage: f.storage.clone(),
        logical: reopened,
        root: f.root.clone(),
    };
    let mounts = g.data(Read, "sys/mounts", None).await;
    assert_eq!(mounts["secret/"]["options"]["version"], "2");
    assert_eq!(mounts["kv/"]["options"], json!({}));
    assert_eq!(g.data(Read, "secret/data/a", None).await["data"]["v"], 2);
    assert_eq!(
        g.data(Read, "secret/metadata/a", None).await["current_version"],
        2
    );
    assert_eq!(g.data(Read, "kv/b", None).await["v"], 3);
    g.lookup_self(&child).await;
    let v3 = g
        .data(Update, "secret/data/a", Some(json!({"data": {"v": 4}})))
        .await;
    assert_eq!(v3["version"], 3);
}

#[tokio::test]
async fn corrupt_mount_table_is_reported_not_ignored() {
    let storage = Arc::new(MemoryStorage::new());
    storage.put("core/mounts", b"{not json").await.unwrap();
    let err = Logical::new(storage).await.unwrap_err();
    assert_eq!(err.status(), 500);
    assert!(err.to_string().contains("core/mounts"), "{err}");
}

#[tokio::test]
async fn corrupt_token_entry_denies_with_500_not_panic() {
    let f = fixture().await;
    let ids = f.token_entries().await;
    f.storage.put(&ids[0], b"garbage").await.unwrap();
    let err = f
        .call(Read, "auth/token/lookup-self", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 500);
    assert!(!err.to_string().contains(&f.root));
}

#[test]
fn debug_output_hides_tokens_and_secrets() {
    let req = LogicalRequest::new(Update, "secret/data/x")
        .with_token("hvs.supersecret")
        .with_data(json!({"data": {"pw": "hunter2"}}));
    let shown = format!("{req:?}");
    assert!(
        !shown.contains("supersecret") && !shown.contains("hunter2"),
        "{shown}"
    );
    let resp = LogicalResponse::ok(json!({"pw": "hunter2"}));
    assert!(!format!("{resp:?}").contains("hunter2"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            Just(Read),
            Just(Operation::Create),
            Just(Update),
            Just(Delete),
            Just(List),
            Just(Patch)
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("data".to_owned()),
                        Just("options".to_owned()),
                        Just("cas".to_owned()),
                        Just("versions".to_owned()),
                        Just("type".to_owned()),
                        Just("ttl".to_owned()),
                        Just("policies".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn path() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("secret".to_owned()),
            Just("kv".to_owned()),
            Just("data".to_owned()),
            Just("metadata".to_owned()),
            Just("destroy".to_owned()),
            Just("sys".to_owned()),
            Just("mounts".to_owned()),
            Just("auth".to_owned()),
            Just("token".to_owned()),
            Just("create".to_owned()),
            Just("".to_owned()),
            Just("..".to_owned()),
            "\\PC{1,6}",
        ];
        prop::collection::vec(segment, 0..6).prop_map(|s| s.join("/"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any path, operation, body and query: the router answers with a
        /// status in Vault's set and never panics.
        #[test]
        fn router_never_panics(op in operation(), path in path(), body in json_value(),
                               version in "\\PC{0,4}") {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let f = fixture().await;
                f.logical.mount("secret", MountKind::KvV2, "").await.unwrap();
                f.logical.mount("kv", MountKind::KvV1, "").await.unwrap();
                let req = LogicalRequest::new(op, path.clone())
                    .with_token(f.root.as_str())
                    .with_data(body)
                    .with_query("version", version);
                let status = match f.logical.handle(req).await {
                    Ok(resp) => resp.status,
                    Err(err) => err.status(),
                };
                prop_assert!([200, 204, 400, 403, 404, 405].contains(&status), "{path}: {status}");
                Ok(())
            })?;
        }
    }
}

#[tokio::test]
async fn cached_tokens_honour_revocation_from_any_path() {
    let f = fixture().await;
    let (parent, _) = f.create_token(json!({"ttl": "1h"})).await;
    let child = f.child_token(&parent, json!({})).await;
    // Warm the cache for both tokens.
    for t in [&parent, &child] {
        f.lookup_self(t).await;
        f.lookup_self(t).await;
    }
    f.ok(Update, "auth/token/revoke", Some(json!({"token": parent})))
        .await;
    for t in [&parent, &child] {
        assert_eq!(f.lookup_self_status(t).await, 403);
    }
}

#[tokio::test]
async fn cached_token_still_expires() {
    let f = fixture().await;
    let (token, _) = f.create_token(json!({"ttl": "3s"})).await;
    f.lookup_self(&token).await;
    wait::until("the cached 3 s token expires", EXPIRY_DEADLINE, || async {
        f.logical.check_token(&token).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn reload_picks_up_changes_made_by_another_router() {
    let f = fixture().await;
    f.call(Read, "auth/token/lookup-self", None).await.unwrap();
    let other = Logical::new(f.storage.clone()).await.unwrap();
    other.mount("late", MountKind::KvV1, "").await.unwrap();
    let (doomed, _) = f.create_token(json!({})).await;
    f.lookup_self(&doomed).await;
    let revoke = LogicalRequest::new(Update, "auth/token/revoke")
        .with_token(f.root.as_str())
        .with_data(json!({"token": doomed}));
    other.handle(revoke).await.unwrap();

    assert_eq!(f.status(Read, "late/x", None).await, 404);
    f.logical.reload().await.unwrap();
    assert_eq!(
        f.status(Update, "late/x", Some(json!({"a": 1}))).await,
        204,
        "the mount created elsewhere is visible after reload"
    );
    assert!(f.logical.check_token(&doomed).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disable_during_writes_leaves_no_data_behind() {
    let f = Arc::new(fixture().await);
    f.logical.mount("busy", MountKind::KvV2, "").await.unwrap();
    let mut writers = Vec::new();
    let written = Arc::new(std::sync::atomic::AtomicU32::new(0));
    for w in 0..8 {
        let f = f.clone();
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            let mut accepted = 0u32;
            for i in 0..5000 {
                let path = format!("busy/data/w{w}/k{i}");
                match f.call(Update, &path, Some(json!({"data": {"i": i}}))).await {
                    Ok(_) => {
                        accepted += 1;
                        written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(err) => {
                        assert_eq!(err.status(), 404, "{err}");
                        break;
                    }
                }
            }
            accepted
        }));
    }
    wait::until(
        "the writers are writing",
        Duration::from_secs(10),
        || async { written.load(std::sync::atomic::Ordering::Relaxed) >= 8 },
    )
    .await;
    assert_eq!(f.status(Delete, "sys/mounts/busy", None).await, 204);
    let mut cut_off = 0;
    for writer in writers {
        cut_off += usize::from(writer.await.unwrap() < 5000);
    }
    assert!(cut_off > 0, "the disable did not overlap any writer");
    let leftovers: Vec<String> = f
        .all_keys()
        .await
        .into_iter()
        .filter(|k| k.starts_with("logical/"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{} keys left, e.g. {:?}",
        leftovers.len(),
        leftovers.first()
    );
}

#[tokio::test]
async fn corrupt_kv_entries_are_500_naming_the_entry() {
    let f = kv2().await;
    f.logical.mount("kv", MountKind::KvV1, "").await.unwrap();
    f.ok(Update, "secret/data/c", Some(json!({"data": {"a": 1}})))
        .await;
    f.ok(Update, "kv/c", Some(json!({"a": 1}))).await;
    let keys = f.all_keys().await;
    for key in keys
        .iter()
        .filter(|k| k.ends_with("/metadata/c") || k.ends_with("/c"))
    {
        f.storage.put(key, b"\xff not json").await.unwrap();
    }
    for (op, path, body) in [
        (Read, "secret/data/c", None),
        (Update, "secret/data/c", Some(json!({"data": {}}))),
        (Read, "secret/metadata/c", None),
        (Read, "kv/c", None),
    ] {
        let err = f.err(op, path, body).await;
        assert_eq!(err.status(), 500, "{op} {path}");
        assert!(err.to_string().contains("/c"), "{err}");
        assert!(err.errors()[0].starts_with("internal error"), "{err}");
    }
}

#[tokio::test]
async fn create_and_update_are_the_same_write() {
    let f = kv2().await;
    let v = f
        .data(
            Operation::Create,
            "secret/data/x",
            Some(json!({"data": {"a": 1}})),
        )
        .await;
    assert_eq!(v["version"], 1);
    let v = f
        .data(Update, "secret/data/x", Some(json!({"data": {"a": 2}})))
        .await;
    assert_eq!(v["version"], 2);
}

#[tokio::test]
async fn envelope_of_a_token_response() {
    let f = fixture().await;
    let resp = f
        .ok(Update, "auth/token/create", Some(json!({"ttl": 60})))
        .await;
    let body = resp.to_json("rid").unwrap();
    for field in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(body.get(field).is_some(), "missing {field}");
    }
    assert_eq!(body["data"], Value::Null);
    assert_eq!(body["lease_duration"], 0);
    assert!(
        body["auth"]["client_token"]
            .as_str()
            .unwrap()
            .starts_with("hvs.")
    );
}

#[tokio::test]
async fn tune_upgrades_kv_v1_to_v2_keeping_every_secret() {
    let f = fixture().await;
    f.ok(Update, "sys/mounts/kv", Some(json!({"type": "kv"})))
        .await;
    f.ok(Update, "kv/a", Some(json!({"v": "a"}))).await;
    f.ok(Update, "kv/dir/b", Some(json!({"v": "b"}))).await;
    f.ok(Update, "kv/dir/deeper/c", Some(json!({"v": "c"})))
        .await;
    let old_uuid = f.data(Read, "sys/mounts/kv", None).await["uuid"].clone();

    let resp = f
        .ok(
            Update,
            "sys/mounts/kv/tune",
            Some(json!({"options": {"version": "2"}})),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.warnings[0].contains("3 secrets"),
        "{:?}",
        resp.warnings
    );
    let mount = f.data(Read, "sys/mounts/kv", None).await;
    assert_eq!(mount["options"]["version"], "2");
    assert_ne!(mount["uuid"], old_uuid);

    for (key, v) in [("a", "a"), ("dir/b", "b"), ("dir/deeper/c", "c")] {
        let read = f.data(Read, &format!("kv/data/{key}"), None).await;
        assert_eq!(read["data"]["v"], v);
        assert_eq!(read["metadata"]["version"], 1);
    }
    assert_eq!(
        f.data(List, "kv/metadata/dir", None).await,
        json!({"keys": ["b", "deeper/"]})
    );
    let v2 = f
        .data(Update, "kv/data/a", Some(json!({"data": {"v": "a2"}})))
        .await;
    assert_eq!(v2["version"], 2);
    // The v1 folder is gone.
    let old = format!("logical/{}/", old_uuid.as_str().unwrap());
    assert!(!f.all_keys().await.iter().any(|k| k.starts_with(&old)));
    // Same version again is a no-op; going back is refused.
    assert_eq!(
        f.status(
            Update,
            "sys/mounts/kv/tune",
            Some(json!({"options": {"version": "2"}}))
        )
        .await,
        204
    );
    let err = f
        .err(
            Update,
            "sys/mounts/kv/tune",
            Some(json!({"options": {"version": "1"}})),
        )
        .await;
    assert!(err.to_string().contains("cannot downgrade"), "{err}");
}

#[tokio::test]
async fn create_orphan_has_no_parent() {
    let f = fixture().await;
    let (parent, _) = f.create_token(json!({"ttl": "1h"})).await;
    let resp = f
        .ok_as(&parent, Update, "auth/token/create-orphan", Some(json!({})))
        .await;
    let auth = resp.auth.unwrap();
    assert_eq!(auth["orphan"], true);
    let orphan = auth["client_token"].as_str().unwrap().to_owned();
    f.ok_as(&parent, Update, "auth/token/revoke-self", None)
        .await;
    f.lookup_self(&orphan).await;
}

#[tokio::test]
async fn bulk_operations_respect_the_backend_transaction_limit() {
    // Like Consul's 64-op limit, to prove the engines batch.
    let storage = Arc::new(seal_core::testing::FaultyStorage::new().with_max_transaction_ops(3));
    let logical = Logical::new(storage.clone()).await.unwrap();
    let root = logical.create_root_token(None).await.unwrap();
    let call = |op: Operation, path: String, body: Option<Value>| {
        let mut req = LogicalRequest::new(op, path).with_token(root.as_str());
        if let Some(body) = body {
            req = req.with_data(body);
        }
        logical.handle(req)
    };
    // KV v1 with 10 secrets, upgraded to v2 (2 ops per secret, batched).
    logical.mount("kv", MountKind::KvV1, "").await.unwrap();
    for i in 0..10 {
        call(Update, format!("kv/s{i}"), Some(json!({"i": i})))
            .await
            .unwrap();
    }
    let resp = call(
        Update,
        "sys/mounts/kv/tune".into(),
        Some(json!({"options": {"version": "2"}})),
    )
    .await
    .unwrap();
    assert!(resp.warnings[0].contains("10 secrets"));
    // A key with many versions, then metadata delete (batched deletes).
    call(
        Update,
        "kv/metadata/many".into(),
        Some(json!({"max_versions": 50})),
    )
    .await
    .unwrap();
    for i in 0..12 {
        call(
            Update,
            "kv/data/many".into(),
            Some(json!({"data": {"i": i}})),
        )
        .await
        .unwrap();
    }
    // Destroying many versions at once, then pruning many at once.
    call(
        Update,
        "kv/destroy/many".into(),
        Some(json!({"versions": [1, 2, 3, 4, 5, 6, 7]})),
    )
    .await
    .unwrap();
    call(
        Update,
        "kv/metadata/many".into(),
        Some(json!({"max_versions": 1})),
    )
    .await
    .unwrap();
    let v = call(
        Update,
        "kv/data/many".into(),
        Some(json!({"data": {"i": 99}})),
    )
    .await
    .unwrap();
    assert_eq!(v.data.unwrap()["version"], 13);
    let meta = call(Read, "kv/metadata/many".into(), None).await.unwrap();
    assert_eq!(meta.data.unwrap()["versions"].as_object().unwrap().len(), 1);
    call(Delete, "kv/metadata/many".into(), None).await.unwrap();
    let err = call(Read, "kv/data/many".into(), None).await.unwrap_err();
    assert_eq!(err.status(), 404);
    // Disabling deletes everything, batched.
    call(Delete, "sys/mounts/kv".into(), None).await.unwrap();
    let mut folders = vec!["logical/".to_owned()];
    while let Some(folder) = folders.pop() {
        for child in storage.list(&folder).await.unwrap() {
            assert!(child.ends_with('/'), "left behind: {folder}{child}");
            folders.push(format!("{folder}{child}"));
        }
    }
}

#[tokio::test]
async fn mount_reads_repeat_data_at_the_top_level_like_vault() {
    let f = kv2().await;
    for path in ["sys/mounts", "sys/mounts/secret", "sys/mounts/secret/tune"] {
        let resp = f.ok(Read, path, None).await;
        assert!(resp.data_at_top_level, "{path}");
        let body = resp.to_json("r").unwrap();
        let data = body["data"].as_object().unwrap().clone();
        for (k, v) in data {
            assert_eq!(body[&k], v, "{path}: {k}");
        }
    }
    // Ordinary responses do not.
    let resp = f.ok(Read, "secret/config", None).await;
    assert!(!resp.data_at_top_level);
    assert!(resp.to_json("r").unwrap().get("max_versions").is_none());
}
