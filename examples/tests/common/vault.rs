//! A real HashiCorp Vault v1.1.2 process (built by `scripts/setup-tools.sh`)
//! on a Consul prefix, and the data set the takeover tests hand to
//! Strongroom: written by Vault itself through its HTTP API.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::node::Client;
use testkit::{ReferenceServer, Scenario, wait};

/// The Vault binary (see [`testkit::tools::vault_bin`]).
///
/// # Panics
/// When it is not there, naming the build log (the tests fail, never skip).
pub fn vault_bin() -> PathBuf {
    testkit::tools::vault_bin().unwrap_or_else(|| {
        panic!(
            "HashiCorp Vault v1.1.2 is not built: the takeover tests need the real Vault to \
             write their data set. Run scripts/setup-tools.sh, which builds it from the Go module \
             proxy; if that failed, its log is {}",
            std::env::var("STRONGROOM_VAULT_BUILD_LOG")
                .unwrap_or_else(|_| "~/.cache/strongroom/vault-build-1.1.2.log".into())
        )
    })
}

/// One Vault server process (killed with its test).
pub struct Vault {
    server: ReferenceServer,
}

impl Vault {
    /// Starts Vault on the Consul agent at `consul` (`host:port`) under
    /// `prefix`, with an optional extra `seal` stanza; waits until it
    /// answers HTTP.
    pub async fn start(sc: &Scenario, consul: &str, prefix: &str, seal: &str) -> Vault {
        let stanzas = format!(
            "storage \"consul\" {{\n  address = \"{consul}\"\n  path = \"{prefix}\"\n  disable_registration = \"true\"\n}}\n{seal}\n"
        );
        Vault {
            server: ReferenceServer::start(sc, "vault", &vault_bin(), &stanzas).await,
        }
    }

    pub fn client(&self) -> &Client {
        self.server.client()
    }

    pub fn log(&self) -> String {
        self.server.process().log()
    }

    /// One API call; panics with Vault's log unless the status is `want`.
    pub async fn expect(
        &self,
        want: u16,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let (code, value) = self.client().call(method, path, token, body).await;
        assert_eq!(
            code,
            want,
            "Vault {method} {path}: {value}; log:\n{}",
            self.log()
        );
        value
    }

    /// Polls until Vault reports itself active and unsealed.
    pub async fn wait_active(&self) {
        wait::until("Vault is active", Duration::from_secs(60), || async {
            (self.client().health_code("").await == 200).then_some(())
        })
        .await;
    }

    /// SIGTERM and wait: Vault seals, steps down and exits cleanly.
    pub fn stop(&self) {
        self.server.process().terminate(Duration::from_secs(60));
    }
}

/// What the fixture wrote, for the takeover to check.
pub struct Written {
    /// Unseal keys (Shamir) or recovery keys (auto seal), base64.
    pub keys: Vec<String>,
    pub root_token: String,
    /// A token with policy `app` and a 2 h TTL, and its accessor.
    pub app_token: String,
    pub app_accessor: String,
}

/// Initialises Vault (Shamir 5/3, or recovery keys 5/3 with an auto seal),
/// unseals it and writes the data set the takeover tests check:
/// * `kv1/` (KV v1): `app` = {pw: one}, `nested/deep` = {x: y};
/// * `secret/` (KV v2): `app` versions 1..3 with version 1 destroyed,
///   `team/db` with its only version deleted, `config` max_versions 5;
/// * `pki/` (a secrets engine Strongroom lacks), `userpass/` auth;
/// * policy `app` (read `secret/data/app`, read `kv1/*`), and a token with
///   it.
pub async fn write_data_set(vault: &Vault, auto_seal: bool) -> Written {
    let init_body = if auto_seal {
        json!({"recovery_shares": 5, "recovery_threshold": 3})
    } else {
        json!({"secret_shares": 5, "secret_threshold": 3})
    };
    let init = vault
        .expect(200, "PUT", "sys/init", None, Some(init_body))
        .await;
    let field = if auto_seal {
        "recovery_keys_base64"
    } else {
        "keys_base64"
    };
    let keys: Vec<String> = init[field]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("key").to_owned())
        .collect();
    let root = init["root_token"].as_str().expect("root_token").to_owned();
    if !auto_seal {
        for key in &keys[..3] {
            vault
                .expect(200, "PUT", "sys/unseal", None, Some(json!({"key": key})))
                .await;
        }
    }
    vault.wait_active().await;
    let t = Some(root.as_str());
    vault
        .expect(
            204,
            "POST",
            "sys/mounts/kv1",
            t,
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    vault
        .expect(
            204,
            "POST",
            "sys/mounts/secret",
            t,
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
    vault
        .expect(
            204,
            "POST",
            "sys/mounts/pki",
            t,
            Some(json!({"type": "pki"})),
        )
        .await;
    vault
        .expect(
            204,
            "POST",
            "sys/auth/userpass",
            t,
            Some(json!({"type": "userpass"})),
        )
        .await;
    vault
        .expect(204, "PUT", "kv1/app", t, Some(json!({"pw": "one"})))
        .await;
    vault
        .expect(204, "PUT", "kv1/nested/deep", t, Some(json!({"x": "y"})))
        .await;
    // KV v2 needs a moment after mounting (its upgrade check); retry the
    // first write until it is accepted.
    wait::until(
        "Vault's KV v2 accepts writes",
        Duration::from_secs(30),
        || async {
            let (code, _) = vault
                .client()
                .call(
                    "PUT",
                    "secret/data/app",
                    t,
                    Some(json!({"data": {"pw": "v1"}})),
                )
                .await;
            (code == 200).then_some(())
        },
    )
    .await;
    for pw in ["v2", "v3"] {
        vault
            .expect(
                200,
                "PUT",
                "secret/data/app",
                t,
                Some(json!({"data": {"pw": pw}})),
            )
            .await;
    }
    vault
        .expect(
            204,
            "PUT",
            "secret/destroy/app",
            t,
            Some(json!({"versions": [1]})),
        )
        .await;
    vault
        .expect(
            200,
            "PUT",
            "secret/data/team/db",
            t,
            Some(json!({"data": {"user": "a"}})),
        )
        .await;
    vault
        .expect(204, "DELETE", "secret/data/team/db", t, None)
        .await;
    vault
        .expect(
            204,
            "PUT",
            "secret/config",
            t,
            Some(json!({"max_versions": 5})),
        )
        .await;
    vault
        .expect(
            204,
            "PUT",
            "sys/policy/app",
            t,
            Some(json!({"policy": "path \"secret/data/app\" { capabilities = [\"read\"] }\npath \"kv1/*\" { capabilities = [\"read\"] }\n"})),
        )
        .await;
    let created = vault
        .expect(
            200,
            "POST",
            "auth/token/create",
            t,
            Some(json!({"policies": ["app"], "ttl": "2h"})),
        )
        .await;
    Written {
        keys,
        root_token: root,
        app_token: created["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned(),
        app_accessor: created["auth"]["accessor"]
            .as_str()
            .expect("accessor")
            .to_owned(),
    }
}
