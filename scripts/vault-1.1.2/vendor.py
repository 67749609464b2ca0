#!/usr/bin/env python3
"""Lays out a govendor-style vendor/ tree for HashiCorp Vault v1.1.2 from the
Go module proxy.

Vault v1.1.2's module zip carries only vendor/vendor.json (the revisions it
was built with), not the vendored code. Each vendored package is mapped to a
module version the proxy serves (pins.tsv: module root, 12-hex revision,
version; SKIP = a package Vault's build here leaves out), fetched with
`go mod download`, and copied into vendor/<import path>. The version most of
a root's packages use is copied whole; packages vendored at another revision
overlay their own directory. extras.tsv names whole modules copied as well
(nested modules split out later, imports of a newer substituted version).

usage: vendor.py VENDOR_JSON PINS_TSV EXTRAS_TSV OUT_DIR
"""
import collections
import json
import os
import shutil
import subprocess
import sys

# Hosts whose import paths are host/owner/repo.
THREE_PART = {"github.com", "golang.org", "bitbucket.org"}
# Hosts whose module root is host/name.
TWO_PART = {"google.golang.org", "cloud.google.com", "go.etcd.io", "go.uber.org",
            "k8s.io", "layeh.com"}


def module_root(pkg):
    parts = pkg.split("/")
    host = parts[0]
    if host in THREE_PART:
        return "/".join(parts[:3])
    if host == "gopkg.in":
        # gopkg.in/name.vN or gopkg.in/owner/name.vN
        return "/".join(parts[:2] if ".v" in parts[1] else parts[:3])
    if host == "go.opencensus.io":
        return host
    if host in TWO_PART:
        return "/".join(parts[:2])
    sys.exit(f"no module root rule for {pkg}")


def read_tsv(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f
                if line.strip() and not line.startswith("#")]


def download(mods):
    """go mod download -json for every (path, version); returns their dirs."""
    out = subprocess.run(["go", "mod", "download", "-json"] +
                         [f"{p}@{v}" for p, v in mods],
                         capture_output=True, text=True, check=False)
    dirs, errors = {}, []
    decoder, text, i = json.JSONDecoder(), out.stdout, 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        obj, i = decoder.raw_decode(text, i)
        if obj.get("Error"):
            errors.append(obj["Error"])
        else:
            dirs[(obj["Path"], obj["Version"])] = obj["Dir"]
    if errors or out.returncode != 0 and not dirs:
        sys.exit("go mod download failed:\n" + "\n".join(errors) + out.stderr)
    return dirs


def skip_names(_dir, names):
    return [n for n in names
            if n in ("vendor", "testdata", ".git") or n.endswith("_test.go")]


def main():
    vendor_json, pins_tsv, extras_tsv, out = sys.argv[1:5]
    version_of = {(root, rev[:12]): ver for root, rev, ver in read_tsv(pins_tsv)}
    packages = []
    with open(vendor_json) as f:
        for pkg in json.load(f)["package"]:
            rev = pkg.get("revision")
            if not rev:
                continue
            root = module_root(pkg["path"])
            ver = version_of[(root, rev[:12])]
            if ver != "SKIP":
                packages.append((root, ver, pkg["path"]))
    extras = [tuple(row[:2]) for row in read_tsv(extras_tsv)]
    mods = sorted({(r, v) for r, v, _ in packages} | set(extras))
    dirs = download(mods)

    primary = {}
    for root in {r for r, _, _ in packages}:
        counts = collections.Counter(v for r, v, _ in packages if r == root)
        primary[root] = counts.most_common(1)[0][0]

    shutil.rmtree(out, ignore_errors=True)
    for root, ver in sorted(primary.items()):
        shutil.copytree(dirs[(root, ver)], os.path.join(out, root), ignore=skip_names)
    for root, ver in extras:
        shutil.copytree(dirs[(root, ver)], os.path.join(out, root), ignore=skip_names,
                        dirs_exist_ok=True)
    for root, ver, pkg in packages:
        if ver == primary[root]:
            continue
        src = os.path.join(dirs[(root, ver)], os.path.relpath(pkg, root))
        dst = os.path.join(out, pkg)
        os.makedirs(dst, exist_ok=True)
        for name in os.listdir(dst):
            if os.path.isfile(os.path.join(dst, name)):
                os.remove(os.path.join(dst, name))
        for name in os.listdir(src):
            path = os.path.join(src, name)
            if os.path.isfile(path) and not name.endswith("_test.go"):
                shutil.copy(path, dst)
    subprocess.run(["chmod", "-R", "u+w", out], check=True)
    print(f"vendored {len(packages)} packages from {len(mods)} module versions")


if __name__ == "__main__":
    main()
