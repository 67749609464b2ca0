//! A fresh OpenBao init on every run: `make-openbao-fixture.sh` starts the
//! real `bao` server (raft storage in a temp dir, loopback, free ports),
//! runs `bao operator init -key-shares=5 -key-threshold=3`, unseals it with
//! three keys and snapshots its storage; the keys must then combine here to
//! OpenBao's KEK. The committed fixture (`openbao_compat.rs`) pins one init;
//! this catches a format change in the installed OpenBao.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{OpenBaoInit, subsets};

/// Kills the fixture script's whole process group (the script and the bao
/// server it started) if the test ends early.
struct ScriptGuard(Child);

impl Drop for ScriptGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", self.0.id())])
                .status();
            let _ = self.0.wait();
        }
    }
}

fn bao_bin() -> PathBuf {
    let path = std::env::var_os("STRONGROOM_BAO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/strongroom/venv/bin/bao")
        });
    assert!(
        path.is_file(),
        "OpenBao's bao not found at {}: run scripts/setup-tools.sh (or set STRONGROOM_BAO_BIN)",
        path.display()
    );
    path
}

fn fresh_init() -> OpenBaoInit {
    use std::os::unix::process::CommandExt as _;
    let bao = bao_bin();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make-openbao-fixture.sh");
    let child = Command::new("bash")
        .arg(&script)
        .arg(out)
        .env("STRONGROOM_BAO_BIN", &bao)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let mut guard = ScriptGuard(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "make-openbao-fixture.sh took over 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "make-openbao-fixture.sh failed: {status}");
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
