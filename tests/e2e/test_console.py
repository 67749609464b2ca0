"""The operator console at /ui/, in a real headless Chromium against real
``strongroom server`` processes on loopback.

The journey an operator makes on a new cluster: initialize 5/3, download
the keys file and read it back, unseal with three keys through the page,
sign in, create and read a KV v2 secret, watch the cluster page, seal by
API and see the page say so. Bad input in every form gives a clear
message and sends nothing; a wrong key shows the error and the progress
resets as the API does. Keys and the token never show up in URLs, logs,
local storage, or the page once the result view is left.

Screenshots of each page land in tests/e2e/output/console/<test>/
(``STRONGROOM_CONSOLE_OUTPUT`` to move them); they are not committed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets as random
from pathlib import Path

import pytest
import requests
from selenium.webdriver.common.keys import Keys

from conftest import Port, Process, Server, dev_args, on_fresh_ports, tool, wait_until
from console_browser import Console, downloaded_file, output_dir, start_browser, stop_browser, wait_on_page

REQUEST_TIMEOUT = 10


def ui_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    config = tmp_path / "server.hcl"
    config.write_text(
        f'storage "redb" {{\n  path = "{tmp_path / "data.redb"}"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n'
        f"ui = true\n{extra}"
    )
    return config


@pytest.fixture
def console_server(strongroom_bin, tmp_path):
    """An uninitialised Shamir server on redb with the console on."""
    srv = Server(strongroom_bin, tmp_path, lambda port: ["server", f"-config={ui_config(tmp_path, port)}"])
    yield srv
    srv.stop()


class ExternalNode:
    """A node someone else started (the three-node run of
    ``examples/tests/console_cluster.rs``): its address and log file."""

    def __init__(self, addr: str, log_path: str):
        self.addr = addr
        self.log_path = Path(log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def cluster(request):
    """The nodes of the journey: the uninitialised nodes named by
    ``STRONGROOM_CONSOLE_NODES`` (``addr=log,addr=log,...``; one HA cluster,
    started by the Rust harness on a real Consul), else one Shamir node on
    redb started here."""
    named = os.environ.get("STRONGROOM_CONSOLE_NODES")
    if named:
        yield [ExternalNode(*item.split("=", 1)) for item in named.split(",")]
    else:
        yield [request.getfixturevalue("console_server")]


@pytest.fixture
def browser(request):
    out = output_dir(request.node.name)
    downloads = out / "downloads"
    downloads.mkdir()
    driver = start_browser(downloads)
    driver._strongroom_out = out  # type: ignore[attr-defined]
    driver._strongroom_downloads = downloads  # type: ignore[attr-defined]
    yield driver
    stop_browser(driver)


def api(addr: str, method: str, path: str, token: str | None = None, body: dict | None = None) -> requests.Response:
    headers = {"X-Vault-Token": token} if token else {}
    return requests.request(method, f"{addr}/v1/{path}", headers=headers, json=body, timeout=REQUEST_TIMEOUT)


def wrong_share(real_keys_b64: list[str]) -> str:
    """A well-formed share (33 bytes, x-coordinate last) that belongs to no
    key set, with an x-coordinate none of the real shares uses."""
    taken = {base64.b64decode(k)[-1] for k in real_keys_b64}
    x = next(v for v in range(1, 256) if v not in taken)
    return base64.b64encode(random.token_bytes(32) + bytes([x])).decode()


def test_console_pages_carry_a_strict_policy(console_server):
    addr = console_server.addr
    root = requests.get(f"{addr}/", allow_redirects=False, timeout=REQUEST_TIMEOUT)
    assert root.status_code == 307 and root.headers["Location"] == "/ui/"
    for path in ("/ui/", "/ui/vault/unseal", "/ui/assets/app.js"):
        r = requests.get(addr + path, timeout=REQUEST_TIMEOUT)
        assert r.status_code == 200, path
        csp = r.headers["Content-Security-Policy"]
        for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                          "frame-ancestors 'none'", "form-action 'none'", "require-trusted-types-for 'script'"):
            assert directive in csp, f"{path}: {directive} missing from {csp}"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "no-referrer"
    page = requests.get(f"{addr}/ui/", timeout=REQUEST_TIMEOUT).text
    assert "<script" in page and not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script in the page"
    assert "http://" not in page.replace(addr, "") and "https://" not in page, "the page loads something from elsewhere"


def test_operator_journey(cluster, browser):
    # The browser stays on the first node; the others (if any) are
    # unsealed by API with the downloaded keys and show up as standbys.
    addr = cluster[0].addr
    out = browser._strongroom_out
    ui = Console(browser, addr, out)

    # ---------------------------------------------------------- Initialize
    ui.open("/")
    assert ui.wait_path("/ui/vault/init")
    assert ui.heading() == "Initialize Strongroom"
    assert ui.find("[data-test-key-shares]").get_attribute("value") == "5"
    ui.shot("init")

    bad_inputs = [
        ("abc", "3", "key-shares", "whole number"),
        ("0", "3", "key-shares", "at least 1"),
        ("256", "3", "key-shares", "at most 255"),
        ("5", "", "key-threshold", "Enter the key threshold"),
        ("5", "6", "key-threshold", "cannot be larger than the number of key shares (5)"),
        ("5", "1", "key-threshold", "at least 2"),
    ]
    for shares, threshold, field, message in bad_inputs:
        ui.type("[data-test-key-shares]", shares)
        ui.type("[data-test-key-threshold]", threshold)
        ui.click("[data-test-init-submit]")
        ui.wait_for(f"[data-test-field-error='{field}']", message)
        assert ui.find(f"input[name='{field}']").get_attribute("aria-invalid") == "true"
        if shares == "5" and threshold == "6":
            ui.shot("init-validation")
    assert not ui.requests_to("/v1/sys/init"), "a malformed init form reached the server"
    assert api(addr, "GET", "sys/init").json() == {"initialized": False}

    ui.type("[data-test-key-shares]", "5")
    ui.type("[data-test-key-threshold]", "3")
    ui.click("[data-test-init-submit]")
    ui.wait_for("[data-test-init-result]", "Here are your 5 keys.")
    assert "only time these keys and the root token are shown" in ui.text("main")
    boxes = ui.find_all("[data-test-key-box]")
    assert len(boxes) == 5
    keys_b64 = [b.find_element("css selector", "[data-test-key-base64]").text for b in boxes]
    keys_hex = [b.find_element("css selector", "[data-test-key-hex]").text for b in boxes]
    for b64, hx in zip(keys_b64, keys_hex):
        assert base64.b64decode(b64).hex() == hx
    assert "•" in ui.text("[data-test-root-token]"), "the root token is masked until asked for"
    ui.click("[data-test-root-token-toggle]")
    root_token = ui.text("[data-test-root-token]")
    assert root_token and "•" not in root_token
    assert api(addr, "GET", "auth/token/lookup-self", root_token).status_code == 503, "sealed: tokens are behind the barrier"
    ui.shot("init-result")
    ui.click("[data-test-root-token-toggle]")

    # The keys file: Vault's init response, named after the cluster and the time.
    ui.click("[data-test-download-keys]")
    keys_file = downloaded_file(browser._strongroom_downloads)
    assert re.fullmatch(r"strongroom-cluster-[A-Za-z0-9._-]+-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ\.json", keys_file.name), keys_file.name
    saved = json.loads(keys_file.read_text())
    assert set(saved) == {"keys", "keys_base64", "root_token"}
    assert saved["keys_base64"] == keys_b64 and saved["keys"] == keys_hex
    assert saved["root_token"] == root_token
    secrets = [*keys_b64, *keys_hex, root_token]

    ui.click("[data-test-advance-button]", "Continue to Unseal")
    assert ui.wait_path("/ui/vault/unseal")
    assert not ui.find_all("[data-test-download-keys]"), "the download link outlives the result view"
    leaks = ui.leaks(secrets)
    assert not leaks, f"secrets left behind after the result view: {leaks}"

    # ---------------------------------------------------------- Unseal
    ui.wait_for("[data-test-shamir-progress]", "0/3 keys provided")
    ui.shot("unseal")
    for text, message in [
        ("", "Enter one key share"),
        ("not-a-key!", "not a key share"),
        (keys_b64[0] + " " + keys_b64[1], "one key at a time"),
    ]:
        ui.type("[data-test-shamir-input]", text)
        ui.click("[data-test-shamir-submit]")
        ui.wait_for("[data-test-field-error='unseal-key']", message)
    assert not ui.requests_to("/v1/sys/unseal"), "a malformed key reached the server"

    # Two good keys, then one from no key set: the server refuses the
    # combination at the threshold and starts over; the page says both.
    for i, key in enumerate(keys_b64[:2], start=1):
        ui.type("[data-test-shamir-input]", key)
        ui.click("[data-test-shamir-submit]")
        ui.wait_for("[data-test-shamir-progress]", f"{i}/3 keys provided")
    nonce = ui.text("[data-test-unseal-nonce]")
    assert nonce == api(addr, "GET", "sys/seal-status").json()["nonce"] and nonce
    ui.shot("unseal-progress")
    ui.type("[data-test-shamir-input]", wrong_share(keys_b64))
    ui.click("[data-test-shamir-submit]")
    ui.wait_for("[data-test-message-error]", "That key was not accepted")
    ui.wait_for("[data-test-shamir-progress]", "0/3 keys provided")
    assert api(addr, "GET", "sys/seal-status").json()["progress"] == 0
    ui.shot("unseal-wrong-key")

    # Reset through the page.
    ui.type("[data-test-shamir-input]", keys_hex[3])
    ui.click("[data-test-shamir-submit]")
    ui.wait_for("[data-test-shamir-progress]", "1/3 keys provided")
    ui.click("[data-test-shamir-reset]")
    ui.wait_for("[data-test-shamir-progress]", "0/3 keys provided")
    assert api(addr, "GET", "sys/seal-status").json()["progress"] == 0

    for i, key in enumerate([keys_b64[0], keys_hex[2], keys_b64[4]], start=1):
        ui.type("[data-test-shamir-input]", key)
        ui.click("[data-test-shamir-submit]")
        if i < 3:
            ui.wait_for("[data-test-shamir-progress]", f"{i}/3 keys provided")
    assert ui.wait_path("/ui/vault/auth")
    assert api(addr, "GET", "sys/seal-status").json()["sealed"] is False
    for node in cluster[1:]:
        for key in saved["keys_base64"][:3]:
            assert api(node.addr, "PUT", "sys/unseal", body={"key": key}).status_code == 200
        assert api(node.addr, "GET", "sys/seal-status").json()["sealed"] is False

    # ---------------------------------------------------------- Sign in
    assert ui.heading() == "Sign in to Strongroom"
    ui.shot("sign-in")
    ui.click("[data-test-auth-submit]")
    ui.wait_for("[data-test-field-error='token']", "Enter a token")
    ui.type("[data-test-token]", "s.not-a-real-token")
    ui.click("[data-test-auth-submit]")
    ui.wait_for("[data-test-message-error]", "not accepted")
    assert ui.js("return sessionStorage.length") == 0
    # Keyboard only: focus the token field with Tab, submit with Enter.
    token_input = ui.find("[data-test-token]")
    token_input.clear()
    ui.js("document.activeElement.blur(); document.querySelector('h1').focus()")
    for _ in range(10):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if browser.switch_to.active_element == token_input:
            break
    assert browser.switch_to.active_element == token_input, "the token field is not reachable with Tab"
    token_input.send_keys(root_token, Keys.ENTER)
    assert ui.wait_path("/ui/vault/cluster")
    assert ui.js("return sessionStorage.getItem('strongroom.token')") == root_token
    assert ui.js("return localStorage.length") == 0

    # ---------------------------------------------------------- Cluster
    # Every node listed (standbys appear with their first echo), one active.
    expected = ["active"] + ["standby"] * (len(cluster) - 1)
    wait_on_page(
        f"the cluster page to list {expected}",
        lambda: sorted(r.get_attribute("data-test-ha-node-role") for r in ui.find_all("[data-test-ha-node-role]"))
        == sorted(expected),
        timeout=60,
    )
    listed = sorted(r.get_attribute("data-test-ha-node") for r in ui.find_all("[data-test-ha-node]"))
    assert listed == sorted(n.addr for n in cluster), listed
    assert ui.text("[data-test-sealed]") == "unsealed"
    assert ui.text("[data-test-seal-type]") == "shamir"
    status = api(addr, "GET", "sys/seal-status").json()
    assert ui.text("[data-test-cluster-name]") == status["cluster_name"]
    assert ui.text("[data-test-cluster-id]") == status["cluster_id"]
    assert ui.text("[data-test-key-term]") == "1"
    ui.wait_for("[data-test-seal-backend='shamir']", "healthy")
    ha = api(addr, "GET", "sys/ha-status", root_token).json()
    assert ha["nodes"] == ha["data"]["nodes"]
    assert [n["active_node"] for n in ha["nodes"]] == [True] + [False] * (len(cluster) - 1)
    assert ha["nodes"][0]["api_address"] == addr and ha["nodes"][0]["last_echo"] is None
    assert all(n["last_echo"] and n["sealed"] is False for n in ha["nodes"][1:])
    if len(cluster) > 1:
        assert ui.text("[data-test-ha-mode]") == "enabled"
        assert ui.text("[data-test-active-address]") == addr
    assert api(addr, "GET", "sys/ha-status").status_code == 403, "sys/ha-status needs a token"
    refused = api(addr, "PUT", "sys/ha-status/echo", body={"echo": base64.b64encode(b"not an echo").decode()})
    assert refused.status_code == 400, refused.text
    ui.shot("cluster")

    # ---------------------------------------------------------- Secrets
    assert api(addr, "POST", "sys/mounts/secret", root_token, {"type": "kv-v2"}).status_code == 204
    ui.click("[data-test-nav-secrets]")
    ui.wait_for("[data-test-mount-link='secret']").click()
    ui.wait_for("[data-test-secret-list-empty]")
    ui.click("[data-test-secret-create]")
    ui.wait_for("[data-test-secret-form]")
    for path, key, value, message in [
        ("", "user", "x", "Enter a path"),
        ("/app/db", "user", "x", "leading"),
        ("app/", "user", "x", "folder"),
        ("app/../db", "user", "x", "segment"),
    ]:
        ui.type("[data-test-secret-path]", path)
        ui.type("[data-test-secret-key]", key)
        ui.type("[data-test-secret-value]", value)
        ui.click("[data-test-secret-save]")
        ui.wait_for("[data-test-field-error='secret-path']", message)
    ui.type("[data-test-secret-path]", "app/db")
    ui.type("[data-test-secret-key]", "")
    ui.click("[data-test-secret-save]")
    ui.wait_for("[data-test-message-error]", "needs a key")
    assert not ui.requests_to("/v1/secret/data/"), "a malformed secret reached the server"

    ui.type("[data-test-secret-key]", "username")
    ui.click("[data-test-secret-add-row]")
    keys = ui.find_all("[data-test-secret-key]")
    values = ui.find_all("[data-test-secret-value]")
    keys[1].send_keys("password")
    values[1].send_keys("correct horse battery staple")
    values[0].clear()
    values[0].send_keys("admin")
    ui.shot("secret-create")
    ui.click("[data-test-secret-save]")
    assert ui.wait_path("/ui/vault/secrets/secret/show/app/db")
    assert ui.wait_for("[data-test-secret-version]").get_attribute("data-test-secret-version") == "1"
    assert ui.text("[data-test-secret-value-cell='password']") == "••••••••"
    ui.click("[data-test-secret-reveal]")
    ui.wait_for("[data-test-secret-value-cell='password']", "correct horse battery staple")
    assert ui.text("[data-test-secret-value-cell='username']") == "admin"
    ui.shot("secret-show")
    stored = api(addr, "GET", "secret/data/app/db", root_token).json()["data"]["data"]
    assert stored == {"username": "admin", "password": "correct horse battery staple"}

    # A second version, then the first again, delete and undelete.
    ui.click("[data-test-secret-edit]")
    ui.wait_for("[data-test-secret-form]")
    assert ui.find("[data-test-secret-path]").get_attribute("readonly") is not None
    password = [v for k, v in zip(ui.find_all("[data-test-secret-key]"), ui.find_all("[data-test-secret-value]"))
                if k.get_attribute("value") == "password"][0]
    password.clear()
    password.send_keys("tr0ub4dor&3")
    ui.click("[data-test-secret-save]")
    ui.wait_for("[data-test-secret-version='2']")
    ui.click("[data-test-secret-reveal]")
    ui.wait_for("[data-test-secret-value-cell='password']", "tr0ub4dor&3")
    assert len(ui.find_all("[data-test-secret-version-item]")) == 2
    ui.click("[data-test-secret-version-link='1']")
    ui.wait_for("[data-test-secret-version='1']")
    ui.click("[data-test-secret-reveal]")
    ui.wait_for("[data-test-secret-value-cell='password']", "correct horse battery staple")
    ui.shot("secret-version-1")
    ui.click("[data-test-secret-delete]")
    ui.click("[data-test-secret-delete-confirm]")
    ui.wait_for("[data-test-secret-deleted]", "Version 1 was deleted")
    versions = api(addr, "GET", "secret/metadata/app/db", root_token).json()["data"]["versions"]
    assert versions["1"]["deletion_time"] and not versions["2"]["deletion_time"]
    ui.shot("secret-deleted")
    ui.click("[data-test-secret-undelete]")
    ui.click("[data-test-secret-reveal]")
    ui.wait_for("[data-test-secret-value-cell='password']", "correct horse battery staple")
    ui.click("a[data-test-nav-secrets]")
    ui.wait_for("[data-test-mount-link='secret']").click()
    ui.wait_for("[data-test-secret-link='app/']").click()
    ui.wait_for("[data-test-secret-link='app/db']")
    ui.shot("secret-folder")

    # ---------------------------------------------------------- Narrow screens
    browser.set_window_size(380, 900)
    ui.click("[data-test-secret-link='app/db']")
    ui.wait_for("[data-test-secret-version='2']")
    ui.shot("narrow-secret")
    ui.click("[data-test-nav-cluster]")
    ui.wait_for("[data-test-ha-nodes] tbody tr")
    ui.shot("narrow-cluster")
    browser.set_window_size(1280, 900)

    # ---------------------------------------------------------- Sealed by API
    assert api(addr, "PUT", "sys/seal", root_token).status_code == 204
    ui.wait_for("[data-test-cluster-sealed]", "This node is sealed", timeout=30)
    assert ui.text("[data-test-sealed]") == "sealed"
    assert "sealed" in [r.get_attribute("data-test-ha-node-role") for r in ui.find_all("[data-test-ha-node-role]")]
    ui.shot("cluster-sealed")

    # ---------------------------------------------------------- Leaks
    leaks = ui.leaks([*keys_b64, *keys_hex], allow_session_storage=False)
    assert not leaks, f"keys found: {leaks}"
    leaks = ui.leaks([root_token], allow_session_storage=True)
    assert not leaks, f"the token was found: {leaks}"
    for node in cluster:
        log = node.log()
        for secret in secrets:
            assert secret not in log, f"a key or the token is in the log of {node.addr}"
    assert api(addr, "GET", "sys/seal-status").json()["sealed"] is True


def test_sign_out_forgets_the_token(strongroom_bin, tmp_path, browser):
    srv = Server(strongroom_bin, tmp_path, dev_args)
    try:
        ui = Console(browser, srv.addr, browser._strongroom_out)
        ui.open("/ui/vault/secrets")
        assert ui.wait_path("/ui/vault/auth?next=")
        ui.type("[data-test-token]", "dev-root")
        ui.click("[data-test-auth-submit]")
        assert ui.wait_path("/ui/vault/secrets"), "signing in returns to the page asked for"
        ui.wait_for("[data-test-mount-link='secret']")
        ui.click("[data-test-sign-out]")
        assert ui.wait_path("/ui/vault/auth")
        assert ui.js("return sessionStorage.length") == 0
        assert not ui.leaks(["dev-root"]), "the token outlived sign-out"
        # A revoked token ends the session on the next call.
        ui.type("[data-test-token]", "dev-root")
        ui.click("[data-test-auth-submit]")
        ui.wait_for("[data-test-ha-nodes]")
        child = api(srv.addr, "POST", "auth/token/create", "dev-root", {"ttl": "1h"}).json()["auth"]["client_token"]
        ui.click("[data-test-sign-out]")
        ui.type("[data-test-token]", child)
        ui.click("[data-test-auth-submit]")
        ui.wait_for("[data-test-ha-nodes]")
        assert api(srv.addr, "POST", "auth/token/revoke-self", child).status_code == 204
        ui.wait_for("main h1", "Sign in", timeout=30)
        ui.wait_for(".message-info", "session ended")
        assert ui.js("return sessionStorage.length") == 0
        ui.shot("session-ended")
    finally:
        srv.stop()


# ------------------------------------------------------------------ auto seal


class Moto:
    """A real moto_server (KMS) on a loopback port."""

    def __init__(self, workdir: Path):
        binary = tool("STRONGROOM_MOTO_BIN", "moto_server", venv="moto_server")
        on_fresh_ports("moto_server", lambda: self._start(binary, workdir))

    def _start(self, binary: str, workdir: Path) -> None:
        self.port = Port()
        self.endpoint = f"http://127.0.0.1:{self.port.number}"
        self.proc = Process([binary, "-H", "127.0.0.1", "-p", str(self.port.number)], workdir, "moto",
                            env={"AWS_DEFAULT_REGION": "us-east-1"})
        try:
            wait_until("moto_server answering", self._up, timeout=60, interval=0.2, on_fail=self.proc.log,
                          proc=self.proc)
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        requests.get(self.endpoint + "/moto-api/", timeout=2)
        return True

    def kms(self, target: str, body: dict) -> dict:
        r = requests.post(
            self.endpoint,
            headers={
                "X-Amz-Target": f"TrentService.{target}",
                "Content-Type": "application/x-amz-json-1.1",
                "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0",
            },
            data=json.dumps(body),
            timeout=REQUEST_TIMEOUT,
        )
        r.raise_for_status()
        return r.json()

    def forget_everything(self) -> None:
        """moto's reset: every key is gone, so KMS refuses to decrypt
        (AccessDeniedException), as it does for a key one may not use."""
        requests.post(self.endpoint + "/moto-api/reset", timeout=REQUEST_TIMEOUT).raise_for_status()

    def stop(self) -> None:
        self.proc.kill()
        self.port.release()


@pytest.fixture
def moto(tmp_path):
    m = Moto(tmp_path)
    yield m
    m.stop()


def test_auto_seal_recovery_keys_and_a_failing_kms(strongroom_bin, tmp_path, moto, browser):
    key_id = moto.kms("CreateKey", {"Description": "strongroom console test"})["KeyMetadata"]["KeyId"]
    seal = (
        f'seal "awskms" {{\n  region = "us-east-1"\n  kms_key_id = "{key_id}"\n'
        f'  endpoint = "{moto.endpoint}"\n  access_key = "test"\n  secret_key = "test"\n}}\n'
        'auto_unseal_max_backoff = "3s"\n'
    )
    srv = Server(strongroom_bin, tmp_path, lambda port: ["server", f"-config={ui_config(tmp_path, port, seal)}"])
    ui = Console(browser, srv.addr, browser._strongroom_out)
    try:
        ui.open("/")
        assert ui.wait_path("/ui/vault/init")
        ui.wait_for("label", "Recovery key shares")
        assert "unseals itself" in ui.text("main")
        ui.shot("init-auto-seal")
        ui.type("[data-test-key-shares]", "3")
        ui.type("[data-test-key-threshold]", "4")
        ui.click("[data-test-init-submit]")
        ui.wait_for("[data-test-field-error='key-threshold']", "recovery key threshold (4) cannot be larger")
        ui.type("[data-test-key-threshold]", "2")
        ui.click("[data-test-init-submit]")
        ui.wait_for("[data-test-init-result]", "Here are your 3 recovery keys.")
        ui.shot("init-auto-seal-result")
        ui.click("[data-test-download-keys]")
        saved = json.loads(downloaded_file(browser._strongroom_downloads).read_text())
        assert len(saved["recovery_keys"]) == 3 and len(saved["recovery_keys_base64"]) == 3
        assert saved["keys"] == [] and saved["root_token"]
        shown = [el.text for el in ui.find_all("[data-test-key-base64]")]
        assert shown == saved["recovery_keys_base64"]
        ui.click("[data-test-advance-button]", "Continue to Sign in")
        assert ui.wait_path("/ui/vault/auth")
        assert not ui.leaks([*saved["recovery_keys"], *saved["recovery_keys_base64"], saved["root_token"]])

        # The KMS forgets the key: a restarted node cannot unseal itself and
        # the Unseal page says why and when it tries again.
        moto.forget_everything()
        srv.stop()
        srv = Server(strongroom_bin, tmp_path, lambda port: ["server", f"-config={ui_config(tmp_path, port, seal)}"])
        ui.addr = srv.addr
        ui.open("/")
        assert ui.wait_path("/ui/vault/unseal")
        ui.wait_for("[data-test-auto-unseal]", "unseals itself")
        ui.wait_for("[data-test-auto-unseal-error]", "Auto-unseal is failing", timeout=30)
        message = ui.text("[data-test-auto-unseal-message]")
        assert "AccessDenied" in message or "access" in message.lower(), message
        next_at = ui.wait_for("[data-test-auto-unseal-next]").get_attribute("datetime")
        status = requests.get(f"{srv.addr}/v1/sys/auto-unseal-status", timeout=REQUEST_TIMEOUT).json()
        assert status["state"] == "retrying" and status["last_error_kind"] == "seal_access_denied"
        assert status["failures"] >= 1 and next_at
        assert not ui.find("[data-test-unseal-form]").is_displayed(), "no key form: the seal unseals this node"
        backend = requests.get(f"{srv.addr}/v1/sys/seal-backend-status", timeout=REQUEST_TIMEOUT).json()
        assert backend["healthy"] is False and backend["backends"][0]["name"] == "awskms"
        ui.shot("unseal-auto-failing")
    finally:
        srv.stop()
