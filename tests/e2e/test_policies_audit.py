"""ACL policies and audit devices with unmodified clients: the OpenBao CLI
(``bao policy``, ``bao token``, ``bao kv``, ``bao audit``) and hvac, against
``strongroom server -dev``."""

import json
import os
import subprocess

import hvac
import pytest

ROOT = "dev-root"

READ_ONLY = """
# Read the app's secrets, nothing else.
path "secret/data/app/*" {
  capabilities = ["read", "list"]
}
path "secret/metadata/app/*" {
  capabilities = ["list"]
}
"""


def bao(bao_bin, server, home, *args, token=None, check=True, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env.update({"BAO_ADDR": server.addr, "HOME": home, "NO_COLOR": "1"})
    if token:
        env["BAO_TOKEN"] = token
    proc = subprocess.run(
        [bao_bin, *args], env=env, capture_output=True, text=True, timeout=60, input=stdin
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"bao {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n"
            f"server log:\n{server.log()[-3000:]}"
        )
    return proc


def test_bao_policy_lifecycle_and_a_read_only_token(bao_bin, dev_server, client_home, tmp_path):
    run = lambda *a, **k: bao(bao_bin, dev_server, client_home, *a, **k)  # noqa: E731
    policy_file = tmp_path / "ro.hcl"
    policy_file.write_text(READ_ONLY)
    out = run("policy", "write", "app-ro", str(policy_file), token=ROOT)
    assert "Success! Uploaded policy: app-ro" in out.stdout, out.stdout
    # From stdin too, and names are lower-cased.
    run("policy", "write", "Team-RW", "-", token=ROOT,
        stdin='path "secret/data/team/*" { capabilities = ["create", "read", "update"] }')
    listed = run("policy", "list", "-format=json", token=ROOT)
    assert set(json.loads(listed.stdout)) >= {"app-ro", "team-rw", "default", "root"}
    read = run("policy", "read", "app-ro", token=ROOT)
    assert read.stdout.strip() == READ_ONLY.strip()
    missing = run("policy", "read", "nope", token=ROOT, check=False)
    assert missing.returncode != 0 and "No policy named: nope" in missing.stderr

    run("kv", "put", "secret/app/db", "password=hunter2", token=ROOT)
    created = run("token", "create", "-policy=app-ro", "-format=json", token=ROOT)
    auth = json.loads(created.stdout)["auth"]
    assert auth["policies"] == ["app-ro", "default"] and auth["token_policies"] == ["app-ro", "default"]
    ro = auth["client_token"]

    got = run("kv", "get", "-field=password", "secret/app/db", token=ro)
    assert got.stdout.strip() == "hunter2"
    listing = run("kv", "list", "-format=json", "secret/app", token=ro)
    assert json.loads(listing.stdout) == ["db"]
    denied = run("kv", "put", "secret/app/db", "password=changed", token=ro, check=False)
    assert denied.returncode != 0
    assert "403" in denied.stderr and "permission denied" in denied.stderr, denied.stderr
    other = run("kv", "get", "secret/other", token=ro, check=False)
    assert other.returncode != 0 and "permission denied" in other.stderr

    caps = run("token", "capabilities", ro, "secret/data/app/db", token=ROOT)
    assert caps.stdout.strip() == "list, read", caps.stdout
    self_caps = run("token", "capabilities", "secret/data/other", token=ro)
    assert self_caps.stdout.strip() == "deny"
    root_caps = run("token", "capabilities", "secret/data/anything", token=ROOT)
    assert root_caps.stdout.strip() == "root"

    # A read-only token may not mint tokens, nor orphans; the subset rule.
    no_create = run("token", "create", "-policy=app-ro", token=ro, check=False)
    assert no_create.returncode != 0 and "permission denied" in no_create.stderr

    run("policy", "delete", "app-ro", token=ROOT)
    after = run("kv", "get", "secret/app/db", token=ro, check=False)
    # The CLI's mount preflight is refused now: the token reaches nothing.
    assert after.returncode != 0 and "Code: 403" in after.stderr, "a deleted policy grants nothing"


def test_bao_sudo_root_and_default_edge_cases(bao_bin, dev_server, client_home):
    run = lambda *a, **k: bao(bao_bin, dev_server, client_home, *a, **k)  # noqa: E731
    run("policy", "write", "ops", "-", token=ROOT, stdin="""
path "sys/audit" { capabilities = ["read"] }
path "sys/audit/*" { capabilities = ["create", "update", "delete"] }
path "sys/policies/acl/*" { capabilities = ["read", "update", "list"] }
path "auth/token/create" { capabilities = ["update"] }
""")
    run("policy", "write", "ops-sudo", "-", token=ROOT, stdin="""
path "sys/audit" { capabilities = ["read", "sudo"] }
path "sys/audit/*" { capabilities = ["create", "update", "delete", "sudo"] }
path "auth/token/create" { capabilities = ["update", "sudo"] }
""")
    ops = json.loads(run("token", "create", "-policy=ops", "-format=json", token=ROOT).stdout)["auth"]["client_token"]
    sudo = json.loads(run("token", "create", "-policy=ops-sudo", "-format=json", token=ROOT).stdout)["auth"][
        "client_token"
    ]
    # sys/audit is root-protected: the capability alone is not enough.
    refused = run("audit", "list", token=ops, check=False)
    assert refused.returncode != 0 and "permission denied" in refused.stderr, refused.stderr
    # (The CLI exits 2 when the list is empty.)
    assert "No audit devices are enabled" in run("audit", "list", token=sudo, check=False).stdout
    seal = run("operator", "seal", token=ops, check=False)
    assert seal.returncode != 0 and "permission denied" in seal.stderr
    # Orphans need sudo on auth/token/create; a sudo caller may give any policy.
    orphan = run("token", "create", "-orphan", "-policy=ops", token=ops, check=False)
    assert orphan.returncode != 0 and "root or sudo privileges required to create orphan token" in orphan.stderr
    # So do a custom id and a period (Vault checks sudo before anything else).
    custom_id = run("token", "create", "-id=chosen-id", "-policy=ops", token=ops, check=False)
    assert custom_id.returncode != 0 and "root or sudo privileges required to specify token id" in custom_id.stderr
    periodic = run("token", "create", "-period=1h", "-policy=ops", token=ops, check=False)
    assert periodic.returncode != 0 and "root or sudo privileges required to create periodic token" in periodic.stderr
    not_subset = run("token", "create", "-policy=ops-sudo", token=ops, check=False)
    assert not_subset.returncode != 0 and "child policies must be subset of parent" in not_subset.stderr
    any_policy = json.loads(run("token", "create", "-orphan", "-policy=app", "-format=json", token=sudo).stdout)
    assert any_policy["auth"]["policies"] == ["app", "default"] and any_policy["auth"]["orphan"] is True
    periodic = json.loads(run("token", "create", "-period=1h", "-policy=app", "-format=json", token=sudo).stdout)
    assert periodic["auth"]["lease_duration"] == 3600, periodic
    looked = json.loads(
        run("token", "lookup", "-format=json", periodic["auth"]["client_token"], token=ROOT).stdout
    )
    assert looked["data"]["period"] == 3600, looked
    # Listing accessors is root-protected too.
    listed = run("list", "-format=json", "auth/token/accessors", token=ROOT).stdout
    assert periodic["auth"]["accessor"] in json.loads(listed)
    refused = run("list", "auth/token/accessors", token=ops, check=False)
    assert refused.returncode != 0 and "permission denied" in refused.stderr, refused.stderr
    no_root = run("token", "create", "-policy=root", token=sudo, check=False)
    assert no_root.returncode != 0 and "root tokens may not be created without parent token being root" in no_root.stderr

    # root is immutable, default cannot be deleted, both are listed.
    root_write = run("policy", "write", "root", "-", token=ROOT, check=False, stdin='path "x" { capabilities = ["read"] }')
    assert root_write.returncode != 0 and 'cannot update "root" policy' in root_write.stderr
    assert "cannot delete default policy" in run("policy", "delete", "default", token=ROOT, check=False).stderr
    assert 'cannot delete "root" policy' in run("policy", "delete", "root", token=ROOT, check=False).stderr
    default = run("policy", "read", "default", token=ROOT).stdout
    assert 'path "auth/token/lookup-self"' in default and 'path "cubbyhole/*"' in default
    # A token with only the default policy looks itself up and nothing more.
    bare = json.loads(run("token", "create", "-policy=default", "-format=json", token=ROOT).stdout)["auth"]["client_token"]
    assert "default" in run("token", "lookup", token=bare).stdout
    assert run("kv", "get", "secret/x", token=bare, check=False).returncode != 0
    none = json.loads(run("token", "create", "-policy=ops", "-no-default-policy", "-format=json", token=ROOT).stdout)
    assert none["auth"]["policies"] == ["ops"]
    assert run("token", "lookup", token=none["auth"]["client_token"], check=False).returncode != 0


def test_hvac_policies_capabilities_and_tokens(dev_server):
    client = hvac.Client(url=dev_server.addr, token=ROOT)
    client.sys.create_or_update_acl_policy(name="hv-ro", policy=READ_ONLY)
    # Dicts are sent as JSON policies.
    client.sys.create_or_update_acl_policy(
        name="hv-json", policy={"path": {"secret/data/json/*": {"capabilities": ["read"]}}}
    )
    assert client.sys.read_acl_policy("hv-ro")["data"]["policy"] == READ_ONLY
    assert {"hv-ro", "hv-json", "default", "root"} <= set(client.sys.list_acl_policies()["data"]["keys"])
    # The legacy API: `rules`, and `policies` beside `keys`.
    legacy = client.sys.read_policy("hv-ro")
    assert legacy["rules"] == READ_ONLY and legacy["data"]["rules"] == READ_ONLY
    assert "hv-ro" in client.sys.list_policies()["data"]["policies"]

    client.secrets.kv.v2.create_or_update_secret(path="app/x", secret={"k": "v"}, mount_point="secret")
    token = client.auth.token.create(policies=["hv-ro"], ttl="1h")["auth"]["client_token"]
    ro = hvac.Client(url=dev_server.addr, token=token)
    assert ro.secrets.kv.v2.read_secret_version(path="app/x", mount_point="secret", raise_on_deleted_version=True)[
        "data"
    ]["data"] == {"k": "v"}
    with pytest.raises(hvac.exceptions.Forbidden):
        ro.secrets.kv.v2.create_or_update_secret(path="app/x", secret={"k": "w"}, mount_point="secret")
    with pytest.raises(hvac.exceptions.Forbidden):
        ro.sys.list_enabled_audit_devices()

    caps = client.sys.get_capabilities(paths=["secret/data/app/x", "sys/audit"], token=token)
    assert caps["data"]["secret/data/app/x"] == ["list", "read"]
    assert caps["data"]["sys/audit"] == ["deny"]
    own = ro.sys.get_capabilities(paths=["secret/data/app/x"])
    assert own["capabilities"] == ["list", "read"]
    accessor = ro.auth.token.lookup_self()["data"]["accessor"]
    by_accessor = client.sys.get_capabilities(paths=["secret/data/json/a"], accessor=accessor)
    assert by_accessor["data"]["capabilities"] == ["deny"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.get_capabilities(paths=["x"], token="not-a-token")

    client.sys.delete_acl_policy("hv-json")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.sys.read_acl_policy("hv-json")


def test_hvac_and_bao_audit_device(bao_bin, dev_server, client_home, tmp_path):
    client = hvac.Client(url=dev_server.addr, token=ROOT)
    log = tmp_path / "audit.log"
    client.sys.enable_audit_device("file", options={"file_path": str(log)})
    devices = client.sys.list_enabled_audit_devices()
    assert devices["data"]["file/"]["type"] == "file"
    client.secrets.kv.v2.create_or_update_secret(path="audited", secret={"pw": "s3cr3t-value"}, mount_point="secret")
    expected = client.sys.calculate_hash("file", "s3cr3t-value")["data"]["hash"]
    assert expected.startswith("hmac-sha256:") and len(expected) == len("hmac-sha256:") + 64
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    writes = [e for e in entries if e["request"]["path"] == "secret/data/audited"]
    assert [e["type"] for e in writes] == ["request", "response"]
    assert writes[0]["request"]["data"]["data"]["pw"] == expected
    assert "s3cr3t-value" not in log.read_text()

    # The CLI lists and disables the device, and enables another on stdout.
    listed = bao(bao_bin, dev_server, client_home, "audit", "list", "-detailed", token=ROOT)
    assert "file/" in listed.stdout and str(log) in listed.stdout
    bao(bao_bin, dev_server, client_home, "audit", "enable", "-path=second", "file", "file_path=stdout", token=ROOT)
    assert {"file/", "second/"} <= set(client.sys.list_enabled_audit_devices()["data"])
    bao(bao_bin, dev_server, client_home, "audit", "disable", "second", token=ROOT)
    client.sys.disable_audit_device("file")
    assert client.sys.list_enabled_audit_devices()["data"] == {}
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.calculate_hash("file", "x")
