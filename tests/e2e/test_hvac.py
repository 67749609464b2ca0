"""The Python client hvac, unmodified, against a real strongroom server:
init, unseal with progress and nonce, seal-status, health codes and
overrides, KV v1 and v2 round trips, and token checks."""

import hvac
import pytest
import requests


def health_code(addr: str, query: str = "") -> int:
    return requests.get(f"{addr}/v1/sys/health{query}", timeout=5).status_code


def test_init_unseal_progress_nonce_and_seal_status(server):
    client = hvac.Client(url=server.addr)
    assert client.sys.is_initialized() is False
    status = client.sys.read_seal_status()
    assert status["initialized"] is False
    assert status["sealed"] is True

    result = client.sys.initialize(secret_shares=5, secret_threshold=3)
    keys = result["keys"]
    assert len(keys) == 5 and len(result["keys_base64"]) == 5
    assert result["root_token"]
    assert client.sys.is_initialized() is True

    status = client.sys.read_seal_status()
    for field in ("type", "initialized", "sealed", "t", "n", "progress", "nonce", "version", "migration", "recovery_seal", "storage_type"):
        assert field in status, f"seal-status lacks {field}: {status}"
    assert status["type"] == "shamir"
    assert (status["sealed"], status["t"], status["n"], status["progress"]) == (True, 3, 5, 0)
    assert status["nonce"] == ""
    assert client.sys.is_sealed() is True

    first = client.sys.submit_unseal_key(keys[0])
    assert first["progress"] == 1 and first["sealed"] is True
    nonce = first["nonce"]
    assert nonce
    # The same share again is ignored.
    again = client.sys.submit_unseal_key(keys[0])
    assert again["progress"] == 1 and again["nonce"] == nonce
    second = client.sys.submit_unseal_key(result["keys_base64"][1])
    assert second["progress"] == 2 and second["nonce"] == nonce
    reset = client.sys.submit_unseal_key(reset=True)
    assert reset["progress"] == 0 and reset["nonce"] == ""

    final = client.sys.submit_unseal_keys(keys[2:5])
    assert final["sealed"] is False
    assert client.sys.is_sealed() is False
    unsealed = client.sys.read_seal_status()
    assert unsealed["cluster_name"] and unsealed["cluster_id"]

    client.token = result["root_token"]
    assert client.is_authenticated()
    client.sys.seal()
    assert client.sys.is_sealed() is True
    # Sealed: everything behind the barrier answers 503.
    with pytest.raises(hvac.exceptions.VaultDown):
        client.secrets.kv.v1.read_secret(path="x", mount_point="kv")
    client.sys.submit_unseal_keys(keys[:3])
    assert client.sys.is_sealed() is False


def test_health_codes_and_overrides(server):
    client = hvac.Client(url=server.addr)
    assert health_code(server.addr) == 501
    assert health_code(server.addr, "?uninitcode=200") == 200
    uninit = client.sys.read_health_status(method="GET", uninit_code=200)
    assert uninit["initialized"] is False

    keys = client.sys.initialize(secret_shares=3, secret_threshold=2)["keys"]
    assert health_code(server.addr) == 503
    assert health_code(server.addr, "?sealedcode=200") == 200
    assert health_code(server.addr, "?standbyok=true&sealedcode=204&uninitcode=204") == 204
    assert client.sys.read_health_status(method="HEAD").status_code == 503
    sealed = client.sys.read_health_status(method="GET", sealed_code=200)
    assert sealed["sealed"] is True and sealed["initialized"] is True

    client.sys.submit_unseal_keys(keys[:2])
    assert health_code(server.addr) == 200
    assert health_code(server.addr, "?activecode=299") == 299
    assert client.sys.read_health_status(method="HEAD").status_code == 200
    healthy = client.sys.read_health_status(method="GET")
    assert healthy["sealed"] is False and healthy["standby"] is False
    assert health_code(server.addr, "?activecode=notanumber") == 400
    leader = client.sys.read_leader_status()
    assert leader["ha_enabled"] is False


def unsealed_client(server) -> hvac.Client:
    client = hvac.Client(url=server.addr)
    result = client.sys.initialize(secret_shares=1, secret_threshold=1)
    client.sys.submit_unseal_key(result["keys"][0])
    client.token = result["root_token"]
    return client


def test_kv_v1_round_trip(server):
    client = unsealed_client(server)
    client.sys.enable_secrets_engine(backend_type="kv", path="kv", options={"version": "1"})
    assert "kv/" in client.sys.list_mounted_secrets_engines()["data"]
    client.secrets.kv.v1.create_or_update_secret(path="app/db", secret={"user": "u", "password": "p"}, mount_point="kv")
    client.secrets.kv.v1.create_or_update_secret(path="app/api", secret={"key": "k"}, mount_point="kv")
    read = client.secrets.kv.v1.read_secret(path="app/db", mount_point="kv")
    assert read["data"] == {"user": "u", "password": "p"}
    listed = client.secrets.kv.v1.list_secrets(path="app", mount_point="kv")
    assert sorted(listed["data"]["keys"]) == ["api", "db"]
    client.secrets.kv.v1.delete_secret(path="app/db", mount_point="kv")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v1.read_secret(path="app/db", mount_point="kv")


def test_kv_v2_round_trip(server):
    client = unsealed_client(server)
    client.sys.enable_secrets_engine(backend_type="kv", path="secret", options={"version": "2"})
    kv = client.secrets.kv.v2
    first = kv.create_or_update_secret(path="svc", secret={"a": "1"}, mount_point="secret")
    assert first["data"]["version"] == 1
    kv.create_or_update_secret(path="svc", secret={"a": "2"}, mount_point="secret")
    latest = kv.read_secret_version(path="svc", mount_point="secret", raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"a": "2"}
    assert latest["data"]["metadata"]["version"] == 2
    old = kv.read_secret_version(path="svc", version=1, mount_point="secret", raise_on_deleted_version=True)
    assert old["data"]["data"] == {"a": "1"}
    meta = kv.read_secret_metadata(path="svc", mount_point="secret")
    assert meta["data"]["current_version"] == 2
    assert set(meta["data"]["versions"]) == {"1", "2"}
    assert kv.list_secrets(path="", mount_point="secret")["data"]["keys"] == ["svc"]

    kv.delete_latest_version_of_secret(path="svc", mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path="svc", mount_point="secret", raise_on_deleted_version=True)
    kv.undelete_secret_versions(path="svc", versions=[2], mount_point="secret")
    assert kv.read_secret_version(path="svc", mount_point="secret", raise_on_deleted_version=True)["data"]["data"] == {"a": "2"}
    kv.destroy_secret_versions(path="svc", versions=[1], mount_point="secret")
    assert kv.read_secret_metadata(path="svc", mount_point="secret")["data"]["versions"]["1"]["destroyed"] is True
    kv.delete_metadata_and_all_versions(path="svc", mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path="svc", mount_point="secret")


def test_tokens_no_token_and_wrong_token_are_forbidden(server):
    root_client = unsealed_client(server)
    root_client.sys.enable_secrets_engine(backend_type="kv", path="kv", options={"version": "1"})
    root_client.secrets.kv.v1.create_or_update_secret(path="s", secret={"v": "1"}, mount_point="kv")

    anonymous = hvac.Client(url=server.addr)
    with pytest.raises(hvac.exceptions.Forbidden):
        anonymous.secrets.kv.v1.read_secret(path="s", mount_point="kv")
    wrong = hvac.Client(url=server.addr, token="s.not-a-real-token")
    assert wrong.is_authenticated() is False
    with pytest.raises(hvac.exceptions.Forbidden):
        wrong.secrets.kv.v1.read_secret(path="s", mount_point="kv")
    with pytest.raises(hvac.exceptions.Forbidden):
        wrong.sys.seal()

    me = root_client.auth.token.lookup_self()["data"]
    assert "root" in me["policies"]
    child = root_client.auth.token.create(ttl="1h")["auth"]["client_token"]
    child_client = hvac.Client(url=server.addr, token=child)
    assert child_client.is_authenticated()
    assert child_client.secrets.kv.v1.read_secret(path="s", mount_point="kv")["data"] == {"v": "1"}
    child_client.auth.token.revoke_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        child_client.secrets.kv.v1.read_secret(path="s", mount_point="kv")
