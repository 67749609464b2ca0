"""The OCI image from scripts/build-image.sh: an OCI archive whose config
runs `strongroom server` as uid 100, whose root filesystem holds
everything the binary needs (it runs from there alone, under chroot, as
that user)."""

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest
import requests

from conftest import FULLNAME, NAMESPACE, ROOT, find, on_fresh_ports, render, server_container, wait_until


@pytest.fixture(scope="module")
def archive(strongroom_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("image") / "strongroom-oci.tar"
    build = subprocess.run([str(ROOT / "scripts" / "build-image.sh"), "--binary", strongroom_bin, "--output", str(out)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    return out


def blob(tar: tarfile.TarFile, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":")
    data = tar.extractfile(f"./blobs/{algorithm}/{hexdigest}").read()
    assert hashlib.sha256(data).hexdigest() == hexdigest, f"blob {digest} does not match its digest"
    return data


@pytest.fixture(scope="module")
def image(archive, tmp_path_factory):
    """(image config, unpacked rootfs) read straight from the archive."""
    rootfs = tmp_path_factory.mktemp("rootfs")
    with tarfile.open(archive) as tar:
        assert json.loads(tar.extractfile("./oci-layout").read())["imageLayoutVersion"] == "1.0.0"
        index = json.loads(tar.extractfile("./index.json").read())
        (entry,) = index["manifests"]
        assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        manifest = json.loads(blob(tar, entry["digest"]))
        config = json.loads(blob(tar, manifest["config"]["digest"]))
        assert config["os"] == "linux" and config["architecture"] == "amd64"
        for layer in manifest["layers"]:
            assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
            data = gzip.decompress(blob(tar, layer["digest"]))
            with tarfile.open(fileobj=io.BytesIO(data)) as layer_tar:
                layer_tar.extractall(rootfs, filter="tar")
    return config, rootfs


def in_image(rootfs, *args) -> list:
    """A command run inside the image's root filesystem as its user."""
    prefix = ["chroot", "--userspec=100:1000", str(rootfs)]
    if os.geteuid() != 0:
        prefix = ["unshare", "--map-root-user", *prefix]
    return [*prefix, *args]


def test_the_archive_runs_strongroom_server_as_uid_100(image):
    config, _ = image
    c = config["config"]
    assert c["Entrypoint"] == ["/usr/local/bin/strongroom", "server"]
    assert c["Cmd"] == ["-config=/vault/config/strongroom.hcl"]
    assert c["User"] == "100:1000"
    assert set(c["ExposedPorts"]) == {"8200/tcp", "8201/tcp"}
    assert "HOME=/home/vault" in c["Env"]


def test_the_binary_runs_from_the_rootfs_alone(image):
    _, rootfs = image
    out = subprocess.run(in_image(rootfs, "/usr/local/bin/strongroom", "--version"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("strongroom "), out.stdout
    assert (rootfs / "etc/passwd").read_text().splitlines()[1].startswith("vault:x:100:1000:")
    assert (rootfs / "vault/data").stat().st_uid == 100


def test_a_dev_server_in_the_rootfs_answers_health(image, ports, processes, tmp_path):
    _, rootfs = image

    def start():
        port = ports()
        server = processes(in_image(rootfs, "/usr/local/bin/strongroom", "server", "-dev",
                                    f"-dev-listen-address=127.0.0.1:{port}", "-dev-root-token-id=root"),
                           tmp_path, "image-dev")
        wait_until("the dev server in the image answering sys/health with 200",
                   lambda: requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=2).status_code == 200,
                   on_fail=server.log, proc=server)
        return port, server

    port, server = on_fresh_ports("the image's dev server", start)
    body = requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=2).json()
    assert body["initialized"] is True and body["sealed"] is False
    assert server.terminate() == 0, server.log()


def test_the_charts_pod_spec_runs_in_the_image(helm, image, ports, processes, tmp_path):
    """The chart's command, args, env and config, run in the image's rootfs
    as the chart's user: a pod without a cluster."""
    _, rootfs = image
    objects = render(helm)
    container = server_container(objects)
    chart_config = find(objects, "ConfigMap", f"{FULLNAME}-config")["data"]["extraconfig-from-values.hcl"]
    downward = {"status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1", "metadata.name": f"{FULLNAME}-0",
                "metadata.namespace": NAMESPACE}
    env = {}
    for e in container["env"]:
        value = e.get("value") or downward[e["valueFrom"]["fieldRef"]["fieldPath"]]
        env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)
    user = find(objects, "StatefulSet")["spec"]["template"]["spec"]["securityContext"]
    prefix = [shutil.which("chroot"), f"--userspec={user['runAsUser']}:{user['runAsGroup']}", str(rootfs)]
    if os.geteuid() != 0:
        prefix = [shutil.which("unshare"), "--map-root-user", *prefix]
    # Exactly the container's environment (plus the image's PATH).
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"

    def start():
        port = ports()
        config = chart_config.replace('"[::]:8200"', f'"127.0.0.1:{port}"').replace('"[::]:8201"', '"127.0.0.1:0"')
        (rootfs / "vault/config/extraconfig-from-values.hcl").write_text(config)
        pod = processes([*prefix, *container["command"], *container["args"]], tmp_path, "pod", env,
                        inherit_env=False)
        url = f"http://127.0.0.1:{port}"
        wait_until("the pod's server answering (uninitialized: 501)",
                   lambda: requests.get(f"{url}/v1/sys/health", timeout=2).status_code == 501, on_fail=pod.log,
                   proc=pod)
        return url, pod

    url, pod = on_fresh_ports("the pod's server", start)
    init = requests.put(f"{url}/v1/sys/init", json={"secret_shares": 1, "secret_threshold": 1}, timeout=10).json()
    sealed = requests.put(f"{url}/v1/sys/unseal", json={"key": init["keys_base64"][0]}, timeout=10).json()["sealed"]
    assert sealed is False
    data = rootfs / "vault/data/strongroom.redb"
    assert data.stat().st_uid == user["runAsUser"], "the data file belongs to the pod's user"
    assert pod.terminate() == 0, pod.log()
