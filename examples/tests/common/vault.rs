//! A real HashiCorp Vault v1.1.2 process (built by `scripts/setup-tools.sh`)
//! on a Consul prefix, and the data set the takeover tests hand to
//! Strongroom: written by Vault itself through its HTTP API.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{call, send_signal};

/// The Vault binary: `STRONGROOM_VAULT_BIN`, else the setup-tools cache.
///
/// # Panics
/// When it is not there, naming the build log (the tests fail, never skip).
pub fn vault_bin() -> PathBuf {
    let path = std::env::var_os("STRONGROOM_VAULT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("STRONGROOM_CACHE").map_or_else(
                || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/strongroom"),
                PathBuf::from,
            );
            cache.join("vault-1.1.2/vault")
        });
    assert!(
        path.is_file(),
        "HashiCorp Vault v1.1.2 is not available at {}: the takeover tests need the real Vault \
         to write their data set. Run scripts/setup-tools.sh, which builds it from the Go module \
         proxy; if that failed, its log is {}",
        path.display(),
        std::env::var("STRONGROOM_VAULT_BUILD_LOG")
            .unwrap_or_else(|_| "~/.cache/strongroom/vault-build-1.1.2.log".into())
    );
    path
}

/// One Vault server process (SIGKILLed on drop).
pub struct Vault {
    child: Option<Child>,
    pub base: String,
    pub log_path: PathBuf,
    pub http: reqwest::Client,
}

impl Vault {
    /// Starts Vault on the Consul agent at `consul` (`host:port`) under
    /// `prefix`, with an optional extra `seal` stanza; waits until it
    /// answers HTTP.
    pub async fn start(dir: &Path, consul: &str, prefix: &str, seal: &str) -> Vault {
        let port = storage_consul::testing::free_port();
        let cluster_port = storage_consul::testing::free_port();
        let config = format!(
            r#"storage "consul" {{
  address = "{consul}"
  path = "{prefix}"
  disable_registration = "true"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = 1
}}
{seal}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
disable_mlock = true
"#
        );
        let config_path = dir.join("vault.hcl");
        std::fs::write(&config_path, config).expect("write vault config");
        let log_path = dir.join("vault.log");
        let log = File::create(&log_path).expect("vault log");
        let child = Command::new(vault_bin())
            .arg("server")
            .arg(format!("-config={}", config_path.display()))
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn vault");
        let vault = Vault {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log_path,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while vault
            .http
            .get(format!("{}/v1/sys/seal-status", vault.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "Vault did not answer within 60 s; log:\n{}",
                vault.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        vault
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
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
        let (code, value) = call(&self.http, &self.base, method, path, token, body).await;
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
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, _) = call(&self.http, &self.base, "GET", "sys/health", None, None).await;
            if code == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Vault did not become active (last health {code}); log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM and wait: Vault seals, steps down and exits cleanly.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        send_signal(i32::try_from(child.id()).expect("pid"), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "Vault did not exit within 60 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = call(
            &vault.http,
            &vault.base,
            "PUT",
            "secret/data/app",
            t,
            Some(json!({"data": {"pw": "v1"}})),
        )
        .await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "KV v2 write: {code} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
