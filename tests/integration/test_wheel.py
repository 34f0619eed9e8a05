"""The project as a user installs it: a wheel, in a venv of its own, run from outside the checkout.

The wheel must hold one import package (nothing of ours at the top of site-packages, where a
`models` or `cli` would collide with the user's own) and everything the console scripts import
and spawn. Its dependencies are not downloaded again: the new venv sees the test venv's
site-packages through a path file, which adds the directory but runs none of its own path files,
so the editable install of this checkout stays out of sight.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.helpers import process_env

pytestmark = pytest.mark.integration


def build_wheel(into: Path) -> Path:
    """The wheel of this checkout, built from a copy of its files (a build in place would leave
    build/ and egg-info in the checkout) without build isolation (nothing downloaded)."""
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    source = into / "source"
    for name in filter(None, tracked.split("\0")):
        origin, copy = ROOT / name, source / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            copy.symlink_to(os.readlink(origin))
        elif origin.is_file():
            shutil.copy2(origin, copy)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "-w", str(into), str(source)], check=True, capture_output=True, cwd=into)
    (wheel,) = into.glob("autonomous_pipeline-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh venv with only the wheel of this checkout installed."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    target = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir)}))
    (target / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install"]
    subprocess.run(
        [*pip, "-q", "--no-deps", "--no-compile", str(wheel)], check=True, capture_output=True
    )
    return env_dir / "bin"


def test_the_wheel_holds_one_import_package_with_the_worker_in_it(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"autonomous_pipeline"}
    for module in ("worker.py", "workflows/plan.py", "activities/agent.py", "backends/spawn.py"):
        assert f"autonomous_pipeline/{module}" in names
    scripts = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    )
    assert b"autonomous-pipeline = autonomous_pipeline.cli.main:entry" in scripts
    assert b"autonomous-pipeline-worker = autonomous_pipeline.worker:entry" in scripts


def test_installed_commands_run_the_demo_plan_from_outside_the_checkout(
    installed: Path, tmp_path: Path
) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    from make_demo_repo import make_demo_repo

    repo = tmp_path / "repo"
    make_demo_repo(repo)
    # The temporal CLI comes with the dependencies; only it is put on PATH, not the test venv.
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "temporal").symlink_to(Path(sysconfig.get_path("scripts")) / "temporal")
    env = process_env(tmp_path) | {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    plan = ROOT / "examples" / "demo_plan.md"
    pipeline = str(installed / "autonomous-pipeline")

    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import autonomous_pipeline; print(autonomous_pipeline.__file__)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(installed.parent)), where  # the wheel's copy, not the checkout

    dry = subprocess.run(
        [pipeline, "--plan", str(plan), "--dry-run", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert '"1.1"' in dry.stdout

    worker_help = subprocess.run(
        [str(installed / "autonomous-pipeline-worker"), "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker_help.returncode == 0, worker_help.stderr
    assert worker_help.stdout.startswith("usage: autonomous-pipeline-worker")

    workspace = tmp_path / "ws"
    run = [pipeline, "--plan", str(plan), "--repo", str(repo), "--agent", "literal"]
    run += ["--workspace", str(workspace)]
    try:
        done = subprocess.run(
            run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        merged = subprocess.run(
            ["git", "-C", str(repo), "log", "--format=%s", "main..pipeline/demo-plan"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert merged.count("\n") >= 3, merged
        # What the installed command tells the user to type is the installed command.
        again = subprocess.run(
            run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert "starter.py" not in again.stdout + again.stderr
    finally:
        subprocess.run(
            [pipeline, "server", "stop", "--workspace", str(workspace)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
        )
