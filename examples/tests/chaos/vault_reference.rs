//! The reference the issue compares with: HashiCorp Vault v1.1.2 with
//! `seal "awskms"`, started against the same moto while the seal's IAM
//! user is denied. Run only when a Vault binary is cached
//! (`STRONGROOM_VAULT_BIN`, or `$STRONGROOM_CACHE/vault-1.1.2/vault` as
//! `scripts/setup-tools.sh` builds it); never required.

use std::time::{Duration, Instant};

use testkit::kms_cluster::KmsCluster;
use testkit::moto::TEST_REGION;
use testkit::process::{Process, ProcessSpec};
use testkit::wait;

/// What Vault 1.1.2 did, or `None` without a binary.
pub(crate) async fn run(cluster: &KmsCluster) -> Option<String> {
    let bin = testkit::tools::vault_bin()?;
    let dir = tempfile::tempdir().ok()?;
    let port = testkit::ports::reserve();
    let user = cluster.user();
    let config = format!(
        r#"storage "inmem" {{}}
listener "tcp" {{
  address     = "127.0.0.1:{port}"
  tls_disable = 1
}}
seal "awskms" {{
  region     = "{TEST_REGION}"
  kms_key_id = "{key}"
  endpoint   = "{endpoint}"
  access_key = "{access}"
  secret_key = "{secret}"
}}
disable_mlock = true
"#,
        port = port.get(),
        key = cluster.key().key_id,
        endpoint = cluster.moto().endpoint(),
        access = user.access_key_id,
        secret = user.secret_access_key.expose_secret(),
    );
    let config_path = dir.path().join("vault.hcl");
    std::fs::write(&config_path, config).ok()?;
    cluster.revoke_kms().await;
    cluster.timeline().step(
        "reference: start HashiCorp Vault v1.1.2 (seal \"awskms\") with KMS permissions revoked",
    );
    let spec = ProcessSpec::new("vault-1.1.2", &bin, dir.path().join("vault.log"))
        .args(["server", &format!("-config={}", config_path.display())])
        .env("AWS_KMS_ENDPOINT", cluster.moto().endpoint())
        .env_remove("VAULT_ADDR")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let started = Instant::now();
    let process = Process::start(spec, cluster.timeline());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .ok()?;
    let url = format!("http://127.0.0.1:{}/v1/sys/health", port.get());
    let outcome = wait::try_until(
        "Vault 1.1.2 exits or answers",
        Duration::from_secs(60),
        || async {
            if let Some(status) = process.exit_status() {
                return Some(format!("exited ({status})"));
            }
            let answer = http.get(&url).send().await.ok()?;
            Some(format!(
                "stayed up, sys/health answering {}",
                answer.status().as_u16()
            ))
        },
    )
    .await
    .unwrap_or_else(|e| e);
    let log = process.log();
    let said = log
        .lines()
        .find(|l| l.contains("rror"))
        .unwrap_or("(nothing on stderr)")
        .trim()
        .to_owned();
    process.kill9();
    cluster.restore_kms().await;
    Some(format!(
        "{outcome} after {:.1} s, saying `{said}` — a pod would crash-loop, where Strongroom starts, waits sealed, answers its probes and unseals itself",
        started.elapsed().as_secs_f64()
    ))
}
