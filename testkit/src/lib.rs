//! Real processes for Strongroom's tests and benches (test-only, used as a
//! dev-dependency): every multi-process suite builds on this crate instead
//! of growing its own harness.
//!
//! | need | use |
//! |---|---|
//! | a loopback port nobody else gets | [`ports::reserve`] |
//! | any child process under a watchdog, with its log | [`Process`], [`ProcessSpec`] |
//! | kill -9 / SIGTERM / SIGSTOP / SIGCONT / restart | [`Process`], [`Node`], [`ConsulCluster`] |
//! | "until this holds, by this deadline" | [`wait::until`], [`wait::until_blocking`] |
//! | what happened when, printed on failure | [`Scenario`], [`Timeline`] |
//! | Consul dev agent (plain, ACL, TLS), shared agent, key prefixes | [`ConsulDev`], [`ConsulOptions`], [`consul::shared_dev`], [`consul::isolated`] |
//! | N-server Consul cluster | [`ConsulCluster`] |
//! | disturb, hold or count traffic to a real server | [`proxy::FaultProxy`], [`proxy::GateProxy`], [`proxy::CountingProxy`] |
//! | KMS (moto_server), IAM users, outages | [`MotoServer`] |
//! | a Strongroom node from a typed config | [`NodeConfig`], [`Node`], [`Client`] |
//! | three HA nodes auto-unsealed by KMS (IAM enforced) on a 3-server Consul | [`kms_cluster::KmsCluster`] |
//! | clients behind a Service recording every operation; what each node says it is | [`load::Load`], [`load::Service`], [`history::History`], [`roles::RoleSampler`] |
//! | "is this history linearizable?" (register model, per key) | [`linearizability::check_register`], [`history::History::check`] |
//! | OpenBao's dev server as the reference to compare with | [`BaoDev`] |
//! | Vault 1.1.2 or OpenBao from an HCL config (storage, seal of the test's choosing) | [`ReferenceServer`] |
//! | N nodes electing an active one on Consul; "never two active" | [`ha::HaCluster`], [`ha::LeaderSampler`] |
//!
//! Rules the harness keeps so suites do not flake: ports come from outside
//! the kernel's ephemeral range and are locked across processes for the
//! test's life; no process outlives its test (a watchdog kills it even when
//! the test process is SIGKILLed); a process that dies at start with
//! "address already in use" is started again on fresh ports, with a log
//! line; waits poll a condition until a deadline, never sleep blindly; a
//! failing test prints its timeline and every process's log tail.
//!
//! A scenario reads like the story it tests (sketch; the `ha_*` settings
//! are rendered as written, whether or not the server reads them yet):
//!
//! ```no_run
//! # async fn example() {
//! use std::time::Duration;
//! use testkit::{ConsulCluster, ConsulOptions, NodeConfig, Scenario, StorageStanza};
//!
//! let sc = Scenario::new("standby takes over from a frozen active node");
//! let consul = ConsulCluster::start_with(3, ConsulOptions::default().timeline(sc.timeline()));
//! let config = NodeConfig::new()
//!     .binary(testkit::tools::strongroom_bin()) // in `examples`: env!("CARGO_BIN_EXE_strongroom")
//!     .storage(
//!         StorageStanza::consul(&consul.http_address(0), Some("vault/"))
//!             .session_ttl(Duration::from_secs(2))
//!             .lock_delay(Duration::from_millis(500)),
//!     )
//!     .ha_enabled(true);
//! let n1 = config.clone().start(&sc, "n1").await;
//! let n2 = config.clone().start(&sc, "n2").await;
//! let init = n1.init_unsealed(1, 1).await;
//! n2.unseal(&init.keys_base64).await;
//! n1.wait_active(Duration::from_secs(30)).await;
//! sc.step("SIGSTOP n1");
//! n1.pause();
//! n2.wait_active(Duration::from_secs(30)).await;
//! # }
//! ```
// A harness reports failure by panicking with a message (the test fails,
// naming what went wrong); it never hands errors back for tests to unwrap.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod bao;
pub mod consul;
pub mod ha;
pub mod history;
pub mod http;
pub mod kms_cluster;
pub mod linearizability;
pub mod load;
pub mod moto;
pub mod node;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod reference;
pub mod roles;
pub mod timeline;
pub mod tls;
pub mod tools;
pub mod wait;

pub use bao::BaoDev;
pub use consul::{ConsulCluster, ConsulDev, ConsulOptions};
pub use moto::MotoServer;
pub use node::{Client, InitKeys, Node, NodeConfig, SealStanza, StorageStanza};
pub use ports::{Port, reserve as reserve_port};
pub use process::{Process, ProcessSpec};
pub use reference::ReferenceServer;
pub use timeline::{Scenario, Timeline};
pub use tls::TestPki;
