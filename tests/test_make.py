"""The Makefile and the install: `make demo` writes only where git ignores (a checkout stays
clean), `make setup GPU=1` ends with onnxruntime-gpu alone in the environment (the two builds
install the same package), and the `gpu` extra pins the GPU build to the CPU build's versions."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fixtures import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git")


def _dry_run(*args: str) -> list[list[str]]:
    out = subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout
    return [shlex.split(line) for line in out.splitlines() if line.split() and line.split()[0].endswith("/fcm")]


def _ignored(path: Path) -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", str(path)]).returncode == 0


def test_make_demo_writes_only_ignored_files(tmp_path):
    written = []
    for words in _dry_run("demo", f"VENV={tmp_path / 'venv'}"):  # the fcm commands it runs
        for flag in ("-o", "--html"):
            if flag in words:
                written.append(Path(words[words.index(flag) + 1]))
    assert written, "make demo runs no fcm command that writes"
    outputs = []
    for path in written:
        if path.suffix == ".onnx":  # fcm convert writes its companions beside it
            stem = path.stem
            outputs += [path] + [path.with_name(stem + s) for s in (".unfused.onnx", ".dag.json", ".weights.npz",
                                                                    ".plan.json", ".report.md")]
        else:
            outputs.append(path)
    tracked = [str(p) for p in outputs if not _ignored(ROOT / p)]
    assert tracked == [], f"make demo would change files git tracks: {tracked}"


FAKE_PYTHON = """#!{python}
# Stands in for the venv's python: logs each call; `pip show` finds the packages in $INSTALLED.
import os, sys
with open(os.environ["CALLS"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:3] == ["-m", "pip", "show"]:
    sys.exit(0 if args[-1] in os.environ["INSTALLED"].split() else 1)
if args[:1] == ["-c"]:
    print("1.31.1")
"""


def _setup(tmp_path: Path, installed: str, *make_args: str) -> list[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    env = dict(os.environ, CALLS=str(calls), INSTALLED=installed)
    # `-W pyproject.toml`: the stamp is out of date whatever the clock says; the library's and the
    # header's rules run the fake python too, so nothing is built
    subprocess.run(["make", "-C", str(ROOT), "-W", "pyproject.toml", "setup", f"VENV={venv}", *make_args],
                   env=env, capture_output=True, text=True, check=True)
    return [line for line in calls.read_text().splitlines() if " pip " in f" {line} "]


def test_make_setup_gpu_keeps_onnxruntime_gpu_alone(tmp_path):
    pip = _setup(tmp_path, "onnxruntime onnxruntime-gpu", "GPU=1")
    assert pip[:2] == ["-m pip install --quiet --upgrade pip", "-m pip install --quiet -e .[dev,gpu]"]
    assert pip[2:] == ["-m pip show --quiet onnxruntime", "-m pip uninstall --quiet -y onnxruntime",
                       "-m pip install --quiet --force-reinstall --no-deps onnxruntime-gpu==1.31.1"]
    assert (tmp_path / "venv" / ".installed-gpu").exists()
    # later calls keep the GPU build; GPU= goes back to the CPU one (onnxruntime-gpu removed)
    assert _setup(tmp_path, "onnxruntime-gpu")[1] == "-m pip install --quiet -e .[dev,gpu]"
    pip = _setup(tmp_path, "onnxruntime onnxruntime-gpu", "GPU=")
    assert pip[1:] == ["-m pip install --quiet -e .[dev]", "-m pip show --quiet onnxruntime-gpu",
                       "-m pip uninstall --quiet -y onnxruntime-gpu",
                       "-m pip install --quiet --force-reinstall --no-deps onnxruntime==1.31.1"]


def test_make_setup_on_a_cpu_machine_installs_nothing_else(tmp_path):
    pip = _setup(tmp_path, "onnxruntime")
    assert pip[1:] == ["-m pip install --quiet -e .[dev]", "-m pip show --quiet onnxruntime-gpu"]


def test_the_gpu_extra_matches_the_cpu_build():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (cpu,) = [d for d in project["dependencies"] if d.startswith("onnxruntime")]
    (gpu,) = project["optional-dependencies"]["gpu"]
    assert gpu == cpu.replace("onnxruntime", "onnxruntime-gpu", 1)
    readme = (ROOT / "README.md").read_text()
    assert "make setup GPU=1" in readme and "pip install -e '.[gpu]'" in readme
