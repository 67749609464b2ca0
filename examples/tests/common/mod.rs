//! Test harness: runs the real `strongroom` binary on a free loopback port
//! with a temporary config, and talks to it over HTTP.
//!
//! Every spawned server is killed (SIGKILL) when its guard drops, so a
//! failing test never leaks a process. Its stdout and stderr go to a log
//! file the tests read (and print when something goes wrong).

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic
)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod kube_api;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_strongroom")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `listener "tcp"` stanza without TLS.
pub fn plain_listener(port: u16) -> String {
    format!("listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\n")
}

/// A redb storage stanza in `dir`.
pub fn redb_storage(dir: &Path) -> String {
    format!(
        "storage \"redb\" {{\n  path = \"{}\"\n}}\n",
        dir.join("data.redb").display()
    )
}

/// One server process (killed on drop).
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
    pub http: reqwest::Client,
}

impl Server {
    /// Writes `config` to `dir/server.hcl` and starts the server (log
    /// appended to `dir/server.log`); waits until it answers HTTP.
    pub async fn start(dir: &Path, port: u16, config: &str) -> Server {
        let config_path = dir.join("server.hcl");
        std::fs::write(&config_path, config).expect("write config");
        let mut server = Self::spawn(
            dir,
            port,
            &["server", &format!("-config={}", config_path.display())],
        );
        server.wait_ready().await;
        server
    }

    /// Starts a server on redb in `dir`, plain HTTP on a free port: the
    /// setup most tests need.
    pub async fn start_redb(dir: &Path) -> Server {
        let port = free_port();
        let config = format!("{}{}", redb_storage(dir), plain_listener(port));
        Self::start(dir, port, &config).await
    }

    /// Starts `strongroom server -dev` on `port` with root token `token`.
    pub async fn start_dev(dir: &Path, port: u16, token: &str) -> Server {
        let mut server = Self::spawn(
            dir,
            port,
            &[
                "server",
                "-dev",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-root-token-id={token}"),
            ],
        );
        server.wait_ready().await;
        server
    }

    /// Starts the binary with `args` without waiting.
    pub fn spawn(dir: &Path, port: u16, args: &[&str]) -> Server {
        Self::spawn_with_env(dir, port, args, &[])
    }

    /// Like [`Server::spawn`], with extra environment variables.
    pub fn spawn_with_env(dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log_path = dir.join("server.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open log");
        let child = Command::new(bin())
            .args(args)
            .env_remove("VAULT_ADDR")
            .env_remove("STRONGROOM_ADDR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn strongroom");
        Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log_path,
            config_path: dir.join("server.hcl"),
            http: reqwest::Client::new(),
        }
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (up to 30 s) until the server answers `sys/health`.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/sys/health", self.base))
                .send()
                .await
            {
                let _ = r.status();
                return;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "the server exited ({status}) before answering; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer within 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: a crash, no chance to flush or seal.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to 40 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = i32::try_from(child.id()).expect("pid");
        send_signal(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the server did not exit within 40 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited (and with what).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// One API call; returns the status and the JSON body (Null if empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        call(&self.http, &self.base, method, path, token, body).await
    }

    /// Polls seal-status until `sealed` is `want` (up to `timeout`).
    pub async fn wait_sealed(&self, want: bool, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, status) = self.call("GET", "sys/seal-status", None, None).await;
            if code == 200 && status["sealed"] == json!(want) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sealed did not become {want} within {timeout:?} (last: {code} {status}); log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends a signal with `kill(1)` (keeps the tests free of `unsafe`).
pub fn send_signal(pid: i32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One API call against `base`.
pub async fn call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{base}/v1/{path}");
    let mut request = http.request(
        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
        &url,
    );
    if let Some(token) = token {
        request = request.header("X-Vault-Token", token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

/// Initialises a Shamir server with `shares`/`threshold`; returns
/// (base64 keys, root token).
pub async fn init(server: &Server, shares: u32, threshold: u32) -> (Vec<String>, String) {
    let (code, body) = server
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
        )
        .await;
    assert_eq!(code, 200, "init: {body}");
    let keys = body["keys_base64"]
        .as_array()
        .expect("keys_base64")
        .iter()
        .map(|k| k.as_str().expect("key").to_owned())
        .collect();
    (
        keys,
        body["root_token"].as_str().expect("root_token").to_owned(),
    )
}

/// Submits keys until unsealed.
pub async fn unseal(server: &Server, keys: &[String]) {
    for key in keys {
        let (code, body) = server
            .call("PUT", "sys/unseal", None, Some(json!({"key": key})))
            .await;
        assert_eq!(code, 200, "unseal: {body}");
        if body["sealed"] == json!(false) {
            return;
        }
    }
    panic!("still sealed after {} keys", keys.len());
}

/// Mounts a KV engine (`version` "1" or "2") at `path`.
pub async fn mount_kv(server: &Server, token: &str, path: &str, version: &str) {
    let (code, body) = server
        .call(
            "POST",
            &format!("sys/mounts/{path}"),
            Some(token),
            Some(json!({"type": "kv", "options": {"version": version}})),
        )
        .await;
    assert!(code == 204 || code == 200, "mount {path}: {code} {body}");
}
