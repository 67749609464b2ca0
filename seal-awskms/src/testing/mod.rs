//! A real `moto_server` for tests: it speaks the KMS JSON protocol (and
//! IAM's query protocol), so the seal is exercised through aws-sdk-kms
//! exactly as against AWS.
//!
//! * [`MotoServer::start`] runs `moto_server` on a free loopback port behind
//!   a small TCP relay and waits until it accepts connections. The process
//!   is killed when the value is dropped.
//! * [`MotoServer::stop`] / [`MotoServer::restart`] take the KMS endpoint
//!   off the network and bring it back **on the same port**: connections
//!   are refused while stopped, exactly what a client of a stopped KMS sees,
//!   while moto keeps its keys, so blobs sealed before the outage open after
//!   it (moto keeps no state across a real process restart).
//!   [`MotoServer::pause`] / [`MotoServer::resume`] freeze the moto process
//!   (SIGSTOP/SIGCONT) for a KMS that accepts connections but never answers.
//! * [`MotoServer::start_with_iam`] enforces IAM (moto's
//!   `INITIAL_NO_AUTH_ACTION_COUNT`): the first requests bootstrap an admin
//!   user the harness uses from then on; [`MotoServer::create_kms_user`]
//!   makes a user allowed `kms:*` through an attached policy, and
//!   [`MotoServer::revoke_kms_access`] detaches it (how operators simulate
//!   a KMS outage).
//!
//! The binary is found through `STRONGROOM_MOTO_BIN`, else
//! `$STRONGROOM_CACHE/venv/bin/moto_server` (default cache
//! `~/.cache/strongroom`); `scripts/setup-tools.sh` installs it. The harness
//! panics with that hint when it is missing: tests never skip.
//!
//! ```no_run
//! # async fn example() {
//! use seal_awskms::{AwsKmsSeal, testing::MotoServer};
//! use seal_core::Seal;
//!
//! let moto = MotoServer::start().await;
//! let key = moto.create_key().await;
//! let seal = AwsKmsSeal::new(moto.config_for(&key.key_id)).await.unwrap();
//! let blob = seal.encrypt(b"secret", b"aad").await.unwrap();
//! moto.stop().await; // KMS outage: calls fail with SealError::Unreachable
//! moto.restart().await; // back on the same port, same keys
//! assert_eq!(seal.decrypt(&blob, b"aad").await.unwrap().as_slice(), b"secret");
//! # }
//! ```
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod iam;
mod relay;

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_sdk_kms::config::{BehaviorVersion, Region};

use crate::{AwsKmsConfig, SecretString};

pub use iam::IamUser;

/// Region the harness uses everywhere.
pub const TEST_REGION: &str = "us-east-1";
/// Access key id moto accepts when IAM is not enforced.
pub const TEST_ACCESS_KEY: &str = "strongroom-test";
/// Secret key moto accepts when IAM is not enforced.
pub const TEST_SECRET_KEY: &str = "strongroom-test-secret";
/// Requests moto serves unauthenticated in IAM mode: exactly the admin
/// bootstrap (CreateUser, PutUserPolicy, CreateAccessKey).
const IAM_BOOTSTRAP_REQUESTS: u32 = 3;
/// How long moto may take to start (Python imports on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A KMS key created in moto by [`MotoServer::create_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestKey {
    /// The key id (a UUID).
    pub key_id: String,
    /// The key ARN, as KMS Encrypt reports it.
    pub arn: String,
}

/// A running `moto_server`, killed on drop. See the [module docs](self).
#[derive(Debug)]
pub struct MotoServer {
    child: Mutex<Option<Child>>,
    pid: u32,
    moto_port: u16,
    relay: relay::Relay,
    log_path: PathBuf,
    /// Credentials the harness signs with: the static test pair, or the
    /// bootstrapped admin in IAM mode.
    access_key: String,
    secret_key: String,
    iam_enforced: bool,
}

/// Where `moto_server` is: `STRONGROOM_MOTO_BIN`, else the cached venv.
///
/// # Panics
/// When it does not exist, with the command that installs it.
pub fn moto_bin() -> PathBuf {
    let path = match std::env::var_os("STRONGROOM_MOTO_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let cache = std::env::var_os("STRONGROOM_CACHE")
                .filter(|c| !c.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                    PathBuf::from(home).join(".cache/strongroom")
                });
            cache.join("venv/bin/moto_server")
        }
    };
    if !path.is_file() {
        panic!(
            "moto_server not found at {}: run scripts/setup-tools.sh (it installs moto[server] \
             into a cached virtualenv) and export what it prints, or set STRONGROOM_MOTO_BIN",
            path.display()
        );
    }
    path
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

impl MotoServer {
    /// Starts moto without IAM enforcement: any credentials are accepted.
    ///
    /// # Panics
    /// When moto is not installed or does not come up.
    pub async fn start() -> Self {
        Self::launch_ready(None).await
    }

    /// Starts moto enforcing IAM on every request after the admin bootstrap:
    /// requests must be signed by a known access key and allowed by the
    /// user's policies. The harness's own calls use the admin user.
    ///
    /// # Panics
    /// When moto is not installed or does not come up.
    pub async fn start_with_iam() -> Self {
        let mut server = Self::launch_ready(Some(IAM_BOOTSTRAP_REQUESTS)).await;
        let (access_key, secret_key) = iam::bootstrap_admin(&server).await;
        server.access_key = access_key;
        server.secret_key = secret_key;
        server.iam_enforced = true;
        server
    }

    /// Launches moto and waits for it; a moto that exits at once (its port
    /// was taken between choosing and binding it) is retried on another.
    async fn launch_ready(no_auth_requests: Option<u32>) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let server = Self::launch(no_auth_requests);
            match server.wait_ready().await {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("{last_error}");
    }

    fn launch(no_auth_requests: Option<u32>) -> Self {
        let bin = moto_bin();
        let moto_port = free_port();
        let log_path = std::env::temp_dir().join(format!(
            "strongroom-moto-{}-{moto_port}.log",
            std::process::id()
        ));
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("clone log file handle");
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("AWS_DEFAULT_REGION", TEST_REGION)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        if let Some(n) = no_auth_requests {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        } else {
            cmd.env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let pid = child.id();
        let relay = relay::Relay::start(moto_port);
        Self {
            child: Mutex::new(Some(child)),
            pid,
            moto_port,
            relay,
            log_path,
            access_key: TEST_ACCESS_KEY.to_owned(),
            secret_key: TEST_SECRET_KEY.to_owned(),
            iam_enforced: false,
        }
    }

    /// Waits until moto accepts TCP connections. A TCP probe, not a request:
    /// in IAM mode every request counts against the unauthenticated budget.
    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.moto_port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "moto_server exited with {status} before accepting connections; its log:\n{}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                ));
            }
            if Instant::now() > deadline {
                panic!(
                    "moto_server did not accept connections on port {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.moto_port,
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The KMS endpoint URL clients use (through the relay, so
    /// [`MotoServer::stop`] affects it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay.port())
    }

    /// moto's own URL, unaffected by [`MotoServer::stop`] (the harness's
    /// own calls go here).
    pub fn moto_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.moto_port)
    }

    /// Whether IAM is enforced ([`MotoServer::start_with_iam`]).
    pub fn iam_enforced(&self) -> bool {
        self.iam_enforced
    }

    /// Takes the endpoint off the network: the listener closes and open
    /// connections are cut, so new calls get "connection refused" until
    /// [`MotoServer::restart`]. moto keeps running with its keys.
    pub async fn stop(&self) {
        self.relay.set_up(false).await;
    }

    /// Brings the endpoint back on the same port after
    /// [`MotoServer::stop`], with the same keys.
    pub async fn restart(&self) {
        self.relay.set_up(true).await;
    }

    /// Freezes the moto process (SIGSTOP): connections are accepted but
    /// never answered, so clients run into their timeouts.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a process frozen by [`MotoServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill {sig}: {e}"));
        assert!(status.success(), "kill {sig} {} failed: {status}", self.pid);
    }

    /// A seal configuration for `key_id` on this server: the harness's
    /// static credentials, region [`TEST_REGION`], the relay endpoint, and
    /// short timeouts (2 s connect, 5 s per attempt, 20 s per call, 3
    /// attempts) so outage tests finish quickly.
    pub fn config_for(&self, key_id: &str) -> AwsKmsConfig {
        self.config_with_credentials(key_id, &self.access_key, &self.secret_key)
    }

    /// Like [`MotoServer::config_for`], signing as `user`.
    pub fn config_for_user(&self, user: &IamUser, key_id: &str) -> AwsKmsConfig {
        self.config_with_credentials(
            key_id,
            &user.access_key_id,
            user.secret_access_key.expose_secret(),
        )
    }

    fn config_with_credentials(&self, key_id: &str, access: &str, secret: &str) -> AwsKmsConfig {
        AwsKmsConfig {
            region: Some(TEST_REGION.to_owned()),
            kms_key_id: Some(key_id.to_owned()),
            endpoint: Some(self.endpoint()),
            access_key: Some(access.to_owned()),
            secret_key: Some(SecretString::new(secret)),
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(20),
            max_attempts: 3,
            ..AwsKmsConfig::default()
        }
    }

    /// A KMS client for the harness's own calls, straight to moto.
    pub fn kms_client(&self) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(TEST_REGION))
            .endpoint_url(self.moto_endpoint())
            .credentials_provider(Credentials::new(
                self.access_key.clone(),
                self.secret_key.clone(),
                None,
                None,
                "strongroom-moto-harness",
            ))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    /// Creates a symmetric ENCRYPT_DECRYPT key.
    ///
    /// # Panics
    /// When moto refuses.
    pub async fn create_key(&self) -> TestKey {
        let out = self
            .kms_client()
            .create_key()
            .description("strongroom seal-awskms test key")
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "moto CreateKey: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                )
            });
        let meta = out.key_metadata().expect("CreateKey returns KeyMetadata");
        TestKey {
            key_id: meta.key_id().to_owned(),
            arn: meta.arn().expect("CreateKey returns an ARN").to_owned(),
        }
    }

    /// Points alias `name` (`alias/…`) at `key_id`, creating the alias or
    /// moving it.
    ///
    /// # Panics
    /// When moto refuses.
    pub async fn set_alias(&self, name: &str, key_id: &str) {
        let client = self.kms_client();
        let exists = client
            .list_aliases()
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto ListAliases: {e}"))
            .aliases()
            .iter()
            .any(|a| a.alias_name() == Some(name));
        if exists {
            client
                .update_alias()
                .alias_name(name)
                .target_key_id(key_id)
                .send()
                .await
                .unwrap_or_else(|e| panic!("moto UpdateAlias: {e}"));
        } else {
            client
                .create_alias()
                .alias_name(name)
                .target_key_id(key_id)
                .send()
                .await
                .unwrap_or_else(|e| panic!("moto CreateAlias: {e}"));
        }
    }

    /// Creates an IAM user allowed `kms:*` through an attached managed
    /// policy, with an access key. Needs [`MotoServer::start_with_iam`].
    ///
    /// # Panics
    /// Without IAM enforcement, or when moto refuses.
    pub async fn create_kms_user(&self, name: &str) -> IamUser {
        assert!(
            self.iam_enforced,
            "create_kms_user needs MotoServer::start_with_iam"
        );
        iam::create_kms_user(self, name).await
    }

    /// Detaches the user's KMS policy: its KMS calls are denied from now on.
    ///
    /// # Panics
    /// When moto refuses.
    pub async fn revoke_kms_access(&self, user: &IamUser) {
        iam::detach(self, user).await;
    }

    /// Re-attaches the user's KMS policy after
    /// [`MotoServer::revoke_kms_access`].
    ///
    /// # Panics
    /// When moto refuses.
    pub async fn grant_kms_access(&self, user: &IamUser) {
        iam::attach(self, user).await;
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = guard.take() {
            // SIGKILL also ends a paused (SIGSTOPped) process.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}
