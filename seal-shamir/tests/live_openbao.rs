//! A fresh OpenBao init on every run: a real `bao server` (raft storage
//! in the scenario's directory, on testkit's reserved loopback ports, under
//! its watchdog, started again on fresh ports if one was taken) is
//! initialized 5/3 by `make-openbao-fixture.sh`, unsealed with three keys
//! and snapshotted; the keys must then combine here to OpenBao's KEK. The
//! committed fixture (`openbao_compat.rs`) pins one init; this catches a
//! format change in the installed OpenBao. With `OPENBAO_FIXTURE_OUT=<dir>`
//! the fixture files are written there (how the committed ones are made).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{OpenBaoInit, subsets};
use testkit::process::{StartError, with_fresh_ports};
use testkit::{Port, Process, ProcessSpec, Scenario, ports, tools};

/// A `bao server` with raft storage: uninitialised, answering on `addr`.
struct OpenBao {
    process: Process,
    addr: String,
    _ports: [Port; 2],
}

fn start_openbao(sc: &Scenario) -> Result<OpenBao, StartError> {
    let (api, cluster) = (ports::reserve(), ports::reserve());
    // A fresh raft directory per attempt: a start cut short leaves state.
    let dir = sc.subdir(&format!("openbao-{api}"));
    let raft = dir.join("raft");
    std::fs::create_dir_all(&raft).unwrap();
    let config = dir.join("config.hcl");
    std::fs::write(
        &config,
        format!(
            "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"fixture\"\n}}\n\
             listener \"tcp\" {{\n  address = \"{}\"\n  cluster_address = \"{}\"\n  tls_disable = true\n}}\n\
             api_addr = \"http://{}\"\ncluster_addr = \"http://{}\"\n",
            raft.display(),
            api.addr(),
            cluster.addr(),
            api.addr(),
            cluster.addr()
        ),
    )
    .unwrap();
    let spec = ProcessSpec::new("openbao", tools::bao_bin(), dir.join("bao.log"))
        .arg("server")
        .arg(format!("-config={}", config.display()))
        // Its CLI helpers read HOME; keep the caller's ~/.vault-token out.
        .env("HOME", &dir);
    let process = Process::start(spec, sc.timeline());
    // An uninitialised server answers seal-status with 200.
    process.until_serving_blocking("openbao answers", Duration::from_secs(60), || {
        testkit::http::raw_request(&api.addr(), "GET", "/v1/sys/seal-status", None, b"")
            .is_ok_and(|r| r.status == 200)
    })?;
    Ok(OpenBao {
        process,
        addr: format!("http://{}", api.addr()),
        _ports: [api, cluster],
    })
}

fn fresh_init() -> OpenBaoInit {
    let sc = Scenario::new("a fresh OpenBao init");
    let bao = with_fresh_ports("openbao", sc.timeline(), || start_openbao(&sc));
    let out = std::env::var_os("OPENBAO_FIXTURE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| sc.subdir("fixture"));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-openbao-fixture.sh");
    sc.step("make-openbao-fixture.sh: init 5/3, unseal with 1, 3, 5, snapshot");
    let run = Process::start(
        ProcessSpec::new("fixture-script", "bash", sc.dir().join("script.log"))
            .arg(&script)
            .arg(&out)
            .env("BAO_ADDR", &bao.addr)
            .env("STRONGROOM_BAO_BIN", tools::bao_bin())
            .env("HOME", sc.dir()),
        sc.timeline(),
    );
    let status = run.wait_exit(Duration::from_secs(120)).unwrap_or_else(|| {
        panic!(
            "make-openbao-fixture.sh took over 120 s\n{}",
            run.failure_report()
        )
    });
    assert!(
        status.success(),
        "make-openbao-fixture.sh failed: {status}\n{}\n{}",
        run.failure_report(),
        bao.process.failure_report()
    );
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    OpenBaoInit::from_strs(
        &read("openbao-init-5-3.json"),
        &read("openbao-storage-5-3.json"),
    )
}

#[test]
fn a_fresh_openbao_init_combines_here_to_its_kek() {
    let f = fresh_init();
    let reference = f.combined(&[0, 1, 2]);
    assert_eq!(reference.len(), 32);
    for k in 3..=5 {
        for subset in subsets(5, k) {
            assert_eq!(f.combined(&subset), reference, "subset {subset:?}");
        }
    }
    for pair in subsets(5, 2) {
        assert!(f.unwrap_stored_root_key(&f.combined(&pair)).is_none());
    }
    f.assert_is_openbaos_kek(&f.combined(&[3, 1, 4]));
}
