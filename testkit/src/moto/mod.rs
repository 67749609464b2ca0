//! A real `moto_server` for tests: it speaks the KMS JSON protocol (and
//! IAM's query protocol), so the seal is exercised through aws-sdk-kms
//! exactly as against AWS.
//!
//! * [`MotoServer::start`] runs `moto_server` on a reserved loopback port
//!   behind a small TCP relay (another reserved port) and waits until it
//!   accepts connections. It is a [`Process`] under the watchdog, killed
//!   when the value drops; one that dies at start on a taken port is started
//!   again on fresh ports.
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
//! The binary comes from [`crate::tools::moto_bin`]; the harness panics
//! with a hint when it is missing: tests never skip.
//!
//! ```no_run
//! # async fn example() {
//! use seal_awskms::AwsKmsSeal;
//! use testkit::MotoServer;
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
mod iam;
mod relay;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_kms::config::{BehaviorVersion, Region};
use seal_awskms::{AwsKmsConfig, SecretString};

pub use iam::IamUser;

use crate::ports::{self, Port};
use crate::process::{Process, ProcessSpec, StartError, with_fresh_ports_async};
use crate::timeline::Timeline;
use crate::tools;

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
    // Field order: the relay and the process go before their ports.
    relay: relay::Relay,
    process: Process,
    moto_port: Port,
    _dir: tempfile::TempDir,
    /// Credentials the harness signs with: the static test pair, or the
    /// bootstrapped admin in IAM mode.
    access_key: String,
    secret_key: String,
    iam_enforced: bool,
}

impl MotoServer {
    /// Starts moto without IAM enforcement: any credentials are accepted.
    ///
    /// # Panics
    /// When moto is not installed or does not come up.
    pub async fn start() -> Self {
        Self::start_on(&Timeline::new(), false).await
    }

    /// Starts moto enforcing IAM on every request after the admin bootstrap:
    /// requests must be signed by a known access key and allowed by the
    /// user's policies. The harness's own calls use the admin user.
    ///
    /// # Panics
    /// When moto is not installed or does not come up.
    pub async fn start_with_iam() -> Self {
        Self::start_on(&Timeline::new(), true).await
    }

    /// [`MotoServer::start`] or [`MotoServer::start_with_iam`], recording
    /// on `timeline` (as `moto`).
    ///
    /// # Panics
    /// When moto is not installed or does not come up.
    pub async fn start_on(timeline: &Timeline, iam: bool) -> Self {
        let budget = iam.then_some(IAM_BOOTSTRAP_REQUESTS);
        let mut server =
            with_fresh_ports_async("moto", timeline, || Self::try_launch(timeline, budget)).await;
        if iam {
            let (access_key, secret_key) = iam::bootstrap_admin(&server).await;
            server.access_key = access_key;
            server.secret_key = secret_key;
            server.iam_enforced = true;
        }
        server
    }

    async fn try_launch(
        timeline: &Timeline,
        no_auth_requests: Option<u32>,
    ) -> Result<Self, StartError> {
        let moto_port = ports::reserve();
        let dir = tempfile::Builder::new()
            .prefix("strongroom-moto-")
            .tempdir()
            .map_err(|e| StartError::Other(format!("tempdir: {e}")))?;
        let mut spec = ProcessSpec::new("moto", tools::moto_bin(), dir.path().join("moto.log"))
            .args(["-H", "127.0.0.1", "-p", &moto_port.get().to_string()])
            .env("AWS_DEFAULT_REGION", TEST_REGION)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
        spec = match no_auth_requests {
            Some(n) => spec.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string()),
            None => spec.env_remove("INITIAL_NO_AUTH_ACTION_COUNT"),
        };
        let process = Process::start(spec, timeline);
        // A TCP probe, not a request: in IAM mode every request counts
        // against the unauthenticated budget.
        let addr = SocketAddr::from(([127, 0, 0, 1], moto_port.get()));
        process
            .until_serving(
                &format!("moto_server accepts connections on {addr}"),
                START_TIMEOUT,
                || async { TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() },
            )
            .await?;
        let relay = relay::Relay::start(moto_port.get());
        Ok(Self {
            relay,
            process,
            moto_port,
            _dir: dir,
            access_key: TEST_ACCESS_KEY.to_owned(),
            secret_key: TEST_SECRET_KEY.to_owned(),
            iam_enforced: false,
        })
    }

    /// The moto process (signals, log).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The KMS endpoint URL clients use (through the relay, so
    /// [`MotoServer::stop`] affects it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay.port())
    }

    /// moto's own URL, unaffected by [`MotoServer::stop`] (the harness's
    /// own calls go here).
    pub fn moto_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.moto_port.get())
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
        self.process.pause();
    }

    /// Resumes a process frozen by [`MotoServer::pause`].
    pub fn resume(&self) {
        self.process.resume();
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
        self.client_signing_as(&self.access_key, &self.secret_key)
    }

    fn client_signing_as(&self, access: &str, secret: &str) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(TEST_REGION))
            .endpoint_url(self.moto_endpoint())
            .credentials_provider(Credentials::new(
                access.to_owned(),
                secret.to_owned(),
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

    /// Creates an IAM user whose attached managed policy allows exactly
    /// `actions` (e.g. the seal's `kms:Encrypt`, `kms:Decrypt`,
    /// `kms:DescribeKey`), with an access key; everything else is denied.
    /// Needs [`MotoServer::start_with_iam`].
    ///
    /// # Panics
    /// Without IAM enforcement, or when moto refuses.
    pub async fn create_user_allowing(&self, name: &str, actions: &[&str]) -> IamUser {
        assert!(
            self.iam_enforced,
            "create_user_allowing needs MotoServer::start_with_iam"
        );
        iam::create_user_allowing(self, name, actions).await
    }

    /// A KMS client signing as `user`, straight to moto (to check what the
    /// user may do, e.g. that a revocation is in effect).
    pub fn kms_client_for(&self, user: &IamUser) -> aws_sdk_kms::Client {
        self.client_signing_as(&user.access_key_id, user.secret_access_key.expose_secret())
    }

    /// Disables `key_id`: every Encrypt and Decrypt with it fails from now
    /// on (a key an operator retired).
    ///
    /// # Panics
    /// When moto refuses.
    pub async fn disable_key(&self, key_id: &str) {
        self.kms_client()
            .disable_key()
            .key_id(key_id)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "moto DisableKey: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                )
            });
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
