//! The unmodified OpenBao CLI against a node: `bao` with its address and
//! token, `operator unseal [-migrate]`, and the whole `operator
//! generate-root` flow.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use testkit::Node;

/// Runs `bao args...` against the node at `addr` with `token` (none: no
/// `BAO_TOKEN`), `HOME` at `home`, feeding `stdin` (keys go there, never
/// on the command line, where a test can avoid it).
pub fn bao_at(
    addr: &str,
    home: &Path,
    token: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut command = Command::new(testkit::tools::bao_bin());
    command
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BAO_ADDR", addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("BAO_TOKEN", token);
    }
    let mut child = command.spawn().expect("spawn bao");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("bao output")
}

/// Runs `bao args...` against `server` with `token`, feeding `stdin`.
pub fn bao(server: &Node, home: &Path, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    bao_at(server.addr(), home, Some(token), args, stdin)
}

/// `bao operator unseal [-migrate] KEY` against `server` (no token, as an
/// operator at a sealed node); its output.
pub fn unseal(server: &Node, key: &str, migrate: bool) -> Output {
    let home = tempfile::tempdir().expect("a temporary HOME for bao");
    let mut args = vec!["operator", "unseal"];
    if migrate {
        args.push("-migrate");
    }
    args.push(key);
    bao_at(server.addr(), home.path(), None, &args, None)
}

/// Asserts `out` succeeded; its stdout as text.
pub fn success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts `out` succeeded; its stdout as JSON.
pub fn json_out(out: &Output, what: &str) -> Value {
    let stdout = success(out, what);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {stdout}"))
}

/// The whole CLI flow with `keys`; returns the decoded new root token.
pub fn cli_generate_root(server: &Node, home: &Path, token: &str, keys: &[String]) -> String {
    let started = json_out(
        &bao(
            server,
            home,
            token,
            &["operator", "generate-root", "-init", "-format=json"],
            None,
        ),
        "generate-root -init",
    );
    let nonce = started["nonce"].as_str().unwrap().to_owned();
    let otp = started["otp"].as_str().unwrap().to_owned();
    assert_eq!(started["otp_length"], json!(28));
    let mut last = Value::Null;
    for key in keys {
        // The key goes through stdin ("-"), never the command line.
        last = json_out(
            &bao(
                server,
                home,
                token,
                &[
                    "operator",
                    "generate-root",
                    &format!("-nonce={nonce}"),
                    "-format=json",
                    "-",
                ],
                Some(key),
            ),
            "generate-root -nonce",
        );
    }
    assert_eq!(last["complete"], json!(true), "{last}");
    let encoded = last["encoded_token"].as_str().unwrap().to_owned();
    let decoded = bao(
        server,
        home,
        token,
        &[
            "operator",
            "generate-root",
            &format!("-decode={encoded}"),
            &format!("-otp={otp}"),
        ],
        None,
    );
    assert!(decoded.status.success(), "{decoded:?}");
    String::from_utf8(decoded.stdout).unwrap().trim().to_owned()
}
