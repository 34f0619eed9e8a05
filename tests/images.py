"""Images for the container tests, built offline and kept in the runtime's local storage.

No registry is reachable here, so images are imported from root filesystems made on this
machine: a busybox one (a second to build; a shell and coreutils) and a Debian one from
debootstrap with the mirror apt uses (about two minutes once; Python and git, for the stub
claude CLI). Both carry MARKER, a file only the image has, so a test can tell whether a command
ran inside the container.

    python -m tests.images          build both (what .ci/run does before the tests)
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BUSYBOX = "localhost/autonomous-pipeline-test/busybox:1"
DEBIAN = "localhost/autonomous-pipeline-test/debian:bookworm"
MARKER = "/etc/autonomous-pipeline-test-image"
RUNC = Path("/usr/sbin/runc")
# podman's default OCI runtime (crun) fails on these machines, and raising rlimits is refused.
HOST_RUN_ARGS = f"--runtime {RUNC} --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
LOCK = Path(tempfile.gettempdir()) / "autonomous-pipeline-test-images.lock"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip for want of `what`; in CI, where .ci/run installs it, fail instead."""
    if in_ci():
        pytest.fail(f"{what} (CI installs it: see .ci/run)")
    pytest.skip(what)


def podman() -> str:
    found = shutil.which("podman")
    if found is None:
        missing("podman is not installed (apt-get install podman runc)")
    assert found is not None
    return found


def run_args() -> str:
    """What PIPELINE_CONTAINER_RUN_ARGS should be for the tests on this machine."""
    if "PIPELINE_CONTAINER_RUN_ARGS" in os.environ:
        return os.environ["PIPELINE_CONTAINER_RUN_ARGS"]
    return HOST_RUN_ARGS if RUNC.exists() else ""


def _exists(image: str) -> bool:
    return subprocess.run([podman(), "image", "exists", image], check=False).returncode == 0


@contextmanager
def _locked() -> Iterator[None]:
    with LOCK.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _import(root: Path, image: str) -> None:
    (root / MARKER.lstrip("/")).write_text(f"{image}\n")
    tar = subprocess.Popen(["tar", "-C", str(root), "-cf", "-", "."], stdout=subprocess.PIPE)
    subprocess.run(
        [podman(), "import", "-q", "-", image],
        stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    if tar.wait() != 0:
        raise OSError(f"tar of {root} failed")


def busybox_image() -> str:
    with _locked():
        if _exists(BUSYBOX):
            return BUSYBOX
        # Debian's busybox-static puts a static busybox here: it runs in an empty image.
        binary = "/bin/busybox" if Path("/bin/busybox").exists() else shutil.which("busybox")
        if binary is None:
            missing("busybox-static is not installed (apt-get install busybox-static)")
        assert binary is not None
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "root"
            for folder in ("bin", "etc", "tmp", "root", "workspace", "home"):
                (root / folder).mkdir(parents=True)
            shutil.copy2(binary, root / "bin" / "busybox")
            applets = subprocess.run([binary, "--list"], capture_output=True, text=True, check=True)
            for name in applets.stdout.split():
                if name != "busybox":
                    (root / "bin" / name).symlink_to("busybox")
            (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
            (root / "etc" / "group").write_text("root:x:0:\n")
            _import(root, BUSYBOX)
        return BUSYBOX


def apt_mirror() -> str:
    """The Debian mirror apt is set up with (its bookworm suite, not security's)."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.sources")]
    sources += Path("/etc/apt/sources.list.d").glob("*.list")
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        for block in re.split(r"\n\s*\n", text):  # deb822 stanzas
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", block, re.M)
            if uris and suites and "bookworm" in suites.group(1).split():
                return uris.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            return m.group(1)
    return "http://deb.debian.org/debian"


def debian_image() -> str:
    with _locked():
        if _exists(DEBIAN):
            return DEBIAN
        if shutil.which("debootstrap") is None:
            missing("debootstrap is not installed (apt-get install debootstrap)")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "root"
            subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3,git", "bookworm",
                 str(root), apt_mirror()],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            (root / "workspace").mkdir(exist_ok=True)
            _import(root, DEBIAN)
        return DEBIAN


if __name__ == "__main__":
    print(busybox_image())
    print(debian_image())
    sys.exit(0)
