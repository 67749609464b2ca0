//! Consul service registration against a real Consul agent: the catalog
//! and health APIs show exactly the tags and check states set, the TTL
//! pushes keep the check alive, deregistration removes the service, and an
//! agent restart is followed by a new registration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use storage_consul::{
    ConsulConfig, ConsulServiceRegistration, RegistrationState, SEALED_CHECK_NAME,
};
use testkit::consul::{ConsulDev, raw_request, shared_dev};
use testkit::wait::until;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(45);

/// A service name of this test's own on a shared agent.
fn service_name() -> String {
    format!("vault-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn config(dev: &ConsulDev, service: &str, tweak: impl FnOnce(&mut ConsulConfig)) -> ConsulConfig {
    let mut config = dev.config();
    config.registration.service = service.to_owned();
    config.registration.check_timeout = Duration::from_secs(1);
    tweak(&mut config);
    config
}

async fn get(dev: &ConsulDev, path: String) -> serde_json::Value {
    let http = dev.http_address();
    let r = tokio::task::spawn_blocking(move || raw_request(&http, "GET", &path, None, b""))
        .await
        .unwrap();
    match r {
        Ok(r) if r.status == 200 => serde_json::from_slice(&r.body).unwrap(),
        // An agent being restarted: nothing to see yet.
        _ => serde_json::Value::Null,
    }
}

/// What the catalog and health endpoints say about one service instance.
#[derive(Debug, PartialEq)]
struct Seen {
    tags: Vec<String>,
    check_status: String,
    check_output: String,
}

async fn seen(dev: &ConsulDev, service: &str) -> Option<Seen> {
    let catalog = get(dev, format!("/v1/catalog/service/{service}")).await;
    let entry = catalog.as_array()?.first()?.clone();
    let health = get(dev, format!("/v1/health/checks/{service}")).await;
    let check = health
        .as_array()?
        .iter()
        .find(|c| c["Name"] == SEALED_CHECK_NAME)?
        .clone();
    // The output of a check whose status did not change reaches the
    // catalog only after the agent's check_update_interval (5 min): read it
    // from the agent, which has it at once.
    let agent = get(dev, "/v1/agent/checks".to_owned()).await;
    let output = agent[check["CheckID"].as_str()?]["Output"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Some(Seen {
        tags: entry["ServiceTags"]
            .as_array()?
            .iter()
            .map(|t| t.as_str().unwrap_or_default().to_owned())
            .collect(),
        check_status: check["Status"].as_str()?.to_owned(),
        check_output: output,
    })
}

/// Waits until the service shows `tags` and its check `status` with the
/// output Vault gives it ("Vault Sealed" / "Vault Unsealed").
async fn until_seen(dev: &ConsulDev, service: &str, tags: &[&str], status: &str) {
    let output = if status == "passing" {
        "Vault Unsealed"
    } else {
        "Vault Sealed"
    };
    let what = format!("{service} shows tags {tags:?} and a {status} check ({output})");
    until(&what, DEADLINE, || async {
        match seen(dev, service).await {
            Some(s) if s.tags == tags && s.check_status == status && s.check_output == output => {
                Ok(())
            }
            other => Err(format!("saw {other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_check_follow_role_and_seal() {
    let dev = shared_dev();
    let service = service_name();
    let reg = ConsulServiceRegistration::start(
        &config(dev, &service, |c| {
            c.registration.service_tags = vec!["blue".into()]
        }),
        "http://127.0.0.1:18200",
        RegistrationState::starting(),
    )
    .unwrap();
    assert_eq!(reg.service_id(), format!("{service}:127.0.0.1:18200"));
    until_seen(dev, &service, &["blue", "standby"], "critical").await;
    let entry = get(dev, format!("/v1/catalog/service/{service}")).await[0].clone();
    assert_eq!(entry["ServiceID"], reg.service_id());
    assert_eq!(entry["ServiceAddress"], "127.0.0.1");
    assert_eq!(entry["ServicePort"], 18200);
    assert_eq!(entry["ServiceMeta"]["external-source"], "vault");

    // Unsealed standby, initialised.
    reg.set_state(RegistrationState {
        active: false,
        sealed: false,
        initialized: true,
    });
    until_seen(
        dev,
        &service,
        &["blue", "standby", "initialized"],
        "passing",
    )
    .await;
    // Active.
    reg.set_state(RegistrationState {
        active: true,
        sealed: false,
        initialized: true,
    });
    until_seen(dev, &service, &["blue", "active", "initialized"], "passing").await;
    let active = get(
        dev,
        format!("/v1/health/service/{service}?tag=active&passing"),
    )
    .await;
    assert_eq!(active.as_array().unwrap().len(), 1, "{active}");

    // The pushes keep the 1 s TTL check passing: sampled over 3 TTLs.
    let sample_end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < sample_end {
        let s = seen(dev, &service).await.unwrap();
        assert_eq!(s.check_status, "passing", "{s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Sealed again (a sealed node is never active).
    reg.set_state(RegistrationState {
        active: false,
        sealed: true,
        initialized: true,
    });
    until_seen(
        dev,
        &service,
        &["blue", "standby", "initialized"],
        "critical",
    )
    .await;
    let passing = get(dev, format!("/v1/health/service/{service}?passing")).await;
    assert_eq!(passing.as_array().map_or(0, Vec::len), 0, "{passing}");

    reg.deregister().await.unwrap();
    until("the service is gone after deregister", DEADLINE, || async {
        seen(dev, &service).await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_one_active_tag() {
    let dev = shared_dev();
    let service = service_name();
    let cfg = config(dev, &service, |_| {});
    let up = |active| RegistrationState {
        active,
        sealed: false,
        initialized: true,
    };
    let a = ConsulServiceRegistration::start(&cfg, "https://127.0.0.1:18201", up(true)).unwrap();
    let b = ConsulServiceRegistration::start(&cfg, "https://127.0.0.1:18202", up(false)).unwrap();
    let active_ids = || async {
        let v = get(dev, format!("/v1/catalog/service/{service}?tag=active")).await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["ServiceID"].as_str().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let only_active = |id: String| {
        let active_ids = &active_ids;
        move || {
            let id = id.clone();
            async move {
                let ids = active_ids().await;
                if ids == [id] {
                    Ok(())
                } else {
                    Err(format!("active: {ids:?}"))
                }
            }
        }
    };
    until(
        "a alone is tagged active",
        DEADLINE,
        only_active(a.service_id().to_owned()),
    )
    .await;
    // Failover: a steps down, b takes over.
    a.set_state(up(false));
    b.set_state(up(true));
    until(
        "b alone is tagged active",
        DEADLINE,
        only_active(b.service_id().to_owned()),
    )
    .await;
    a.deregister().await.unwrap();
    b.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_again_after_agent_restart() {
    let dev = std::sync::Arc::new(tokio::task::spawn_blocking(ConsulDev::start).await.unwrap());
    let service = service_name();
    let reg = ConsulServiceRegistration::start(
        &config(&dev, &service, |_| {}),
        "http://127.0.0.1:18203",
        RegistrationState {
            active: true,
            sealed: false,
            initialized: true,
        },
    )
    .unwrap();
    until_seen(&dev, &service, &["active", "initialized"], "passing").await;
    let restarting = dev.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap();
    // A dev agent comes back empty; the loop notices and registers again.
    until_seen(&dev, &service, &["active", "initialized"], "passing").await;
    reg.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_api_addr_is_a_config_error() {
    let err = ConsulServiceRegistration::start(
        &ConsulConfig::default(),
        "10.0.0.1:8200",
        RegistrationState::starting(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("api_addr"), "{err}");
}
