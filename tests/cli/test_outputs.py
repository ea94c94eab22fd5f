"""Where outputs land and what a command leaves behind: staged inside the output folder (a mount
point, a folder whose parent is read-only), checked before the work, committed as one set with
the fused model last and its companions' digests in it, rolled back on a failed rename, cleaned up
on SIGTERM, and written with the user's umask."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from fcm.cli import main
from fcm_core.errors import FcmError
from fcm_core.fileio import atomic_write_text, staged_directory
from tests.support.fixtures import MOB_V2_TFLITE, ROOT, seed_dag_path
from tests.support.tiny import fused_pair


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


def _fcm(*args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "fcm", *args], capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") and "partial" in p.name]


def _one_line_error(result, words: str) -> str:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fcm: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert words in errors[0], errors[0]
    return errors[0]


# --- 3. staged inside the output folder -------------------------------------------------------------

@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` refuses new entries, also to root (the immutable attribute), or skip."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            pytest.skip("running as root, and chattr +i does not work here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def test_a_folder_whose_parent_is_read_only(tmp_path):
    parent = tmp_path / "parent"
    out = parent / "out"
    out.mkdir(parents=True)
    with _read_only(parent):
        result = _fcm("extract", str(MOB_V2_TFLITE), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dag.json", "weights.npz"]


class _Devices:
    """os.rename/os.replace as if ``mount`` were a mount point: a rename into or out of it fails
    with EXDEV ("Invalid cross-device link"), as for a Docker volume."""

    def __init__(self, monkeypatch, mount: Path):
        self.mount = mount.resolve()
        for name in ("rename", "replace"):
            original = getattr(os, name)
            monkeypatch.setattr(os, name, self._wrap(original))

    def _inside(self, path) -> bool:
        return Path(os.path.abspath(path)).resolve().is_relative_to(self.mount)

    def _wrap(self, original):
        def move(src, dst, *args, **kwargs):
            if self._inside(src) != self._inside(dst):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
            return original(src, dst, *args, **kwargs)
        return move


def test_outputs_land_on_a_mount_point(tmp_path, monkeypatch, capsys):
    out = tmp_path / "volume"
    out.mkdir()
    _Devices(monkeypatch, out)
    assert main(["-q", "extract", str(MOB_V2_TFLITE), "-o", str(out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["dag.json", "weights.npz"]
    fused, unfused = fused_pair(__import__("numpy").random.default_rng(0))
    _write_set(out / "model.onnx", fused, unfused)  # fcm convert's writer
    assert (out / "model.onnx").is_file() and not _leftovers(tmp_path)


def test_an_output_that_cannot_be_written_fails_before_the_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    result = _fcm("convert", "keras:MobileNetV2", "-o", str(blocker / "m.onnx"))
    _one_line_error(result, "a file is in the way of the output folder")
    assert "fcm: opening" not in result.stderr  # refused before the model was read
    assert blocker.read_text() == "in the way"
    folder = tmp_path / "folder"
    (folder / "m.onnx").mkdir(parents=True)
    result = _fcm("convert", "keras:MobileNetV2", "-o", str(folder / "m.onnx"))
    _one_line_error(result, "a folder is in the way of an output file")
    assert "fcm: opening" not in result.stderr
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    with _read_only(readonly):
        result = _fcm("convert", "keras:MobileNetV2", "-o", str(readonly / "sub" / "m.onnx"))
    _one_line_error(result, f"{readonly}: cannot write (")
    assert "fcm: opening" not in result.stderr
    assert list(readonly.iterdir()) == []


def test_extract_over_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine")
    result = _fcm("extract", str(MOB_V2_TFLITE), "-o", str(target))
    _one_line_error(result, "a file is in the way of the output folder")
    assert target.read_text() == "mine" and not _leftovers(tmp_path)


# --- 4. one set, fused model last, rolled back on failure -----------------------------------------

def _write_set(output: Path, fused: onnx.ModelProto, unfused: onnx.ModelProto) -> dict[str, Path]:
    from extractor.dag import Dag
    from fcm.pipeline.convert import output_files, write_outputs

    files = output_files(output)
    write_outputs(files, fused, unfused, Dag.load(seed_dag_path("mob_v2")), {"plan": output.stem}, f"report {output.stem}\n")
    return files


def test_the_fused_model_is_committed_last_and_knows_its_companions(tmp_path, monkeypatch, rng):
    fused, unfused = fused_pair(rng)
    moved = []
    original = os.rename
    monkeypatch.setattr(os, "rename", lambda src, dst: (moved.append(Path(dst)), original(src, dst))[1])
    files = _write_set(tmp_path / "m.onnx", fused, unfused)
    committed = [p for p in moved if p.parent == tmp_path]
    assert committed[-1] == files["fused"] and set(committed) == set(files.values())
    recorded = json.loads(next(p.value for p in onnx.load(files["fused"]).metadata_props if p.key == "fcm.companions"))
    import hashlib

    assert recorded == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files.items() if k != "fused"}


@pytest.mark.parametrize("failing", [1, 3, 6])
def test_a_failed_rename_restores_the_previous_set(tmp_path, monkeypatch, rng, failing):
    fused, unfused = fused_pair(rng)
    files = _write_set(tmp_path / "m.onnx", fused, unfused)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    other_fused, other_unfused = fused_pair(rng)
    calls = []
    original = os.rename

    def rename(src, dst):
        if Path(dst).parent == tmp_path:
            calls.append(dst)
            if len(calls) == failing:
                raise OSError(errno.EIO, "Input/output error", str(src))
        return original(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(FcmError, match="cannot write"):
        _write_set(tmp_path / "m.onnx", other_fused, other_unfused)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert not _leftovers(tmp_path) and files["fused"].is_file()


def test_verify_refuses_a_mixed_set(tmp_path, rng):
    fused, unfused = fused_pair(rng)
    files = _write_set(tmp_path / "m.onnx", fused, unfused)
    assert _fcm("verify", str(files["fused"]), "--provider", "cpu", "--runs", "1").returncode == 0
    _, later_unfused = fused_pair(rng)  # what a later conversion, killed while it renamed, left beside it
    onnx.save(later_unfused, files["unfused"])
    error = _one_line_error(_fcm("verify", str(files["fused"]), "--provider", "cpu"), "convert again")
    assert error.startswith(f"fcm: error: {files['unfused']}: ")


def test_weight_free_copies_forget_the_companions(tmp_path, rng):
    """fcm.skeleton's copies (refilled with other data on the GPU machine) are no longer the
    converted set: they carry no digests, and fcm verify takes them."""
    from fcm.skeleton import main as skeleton

    fused, unfused = fused_pair(rng)
    _write_set(tmp_path / "in" / "m.onnx", fused, unfused)
    assert skeleton(["pack", str(tmp_path / "in"), "-o", str(tmp_path / "packed")]) == 0
    assert skeleton(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "out")]) == 0
    copy = tmp_path / "out" / "m.onnx"
    assert not [p for p in onnx.load(copy).metadata_props if p.key == "fcm.companions"]
    assert _fcm("verify", str(copy), "--provider", "cpu", "--runs", "1").returncode == 0


@pytest.mark.parametrize("transposed", [False, True])
def test_weight_free_copies_keep_a_scaled_weight_a_multiple_of_its_source(tmp_path, rng, transposed):
    """A fused model's weight that is an unfused weight times a factor the rewrite folded into it
    (MobileNetV3's x / 6), in the kernel's layout or transposed, is refilled as the unfused weight's
    new data times that factor, so that the copies still compute the same function."""
    from onnx import numpy_helper

    from fcm.skeleton import main as skeleton

    weight = rng.normal(size=(64, 32, 1, 1)).astype(np.float32)
    matrix = weight.reshape(64, 32).T if transposed else weight.reshape(64, 32)
    scaled = (matrix * np.float32(1 / 6)).astype(np.float32)
    for name, arrays in (("m.unfused.onnx", {"W": weight}), ("m.onnx", {"S": scaled, "C": weight.reshape(64, 32)})):
        graph = onnx.helper.make_graph([], "g", [], [], [numpy_helper.from_array(a, k) for k, a in arrays.items()])
        (tmp_path / "in").mkdir(exist_ok=True)
        onnx.save(onnx.helper.make_model(graph), tmp_path / "in" / name)
    assert skeleton(["pack", str(tmp_path / "in"), "-o", str(tmp_path / "packed")]) == 0
    assert skeleton(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "out")]) == 0
    read = lambda name: {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "out" / name).graph.initializer}
    filled, copies = read("m.unfused.onnx")["W"].reshape(64, 32), read("m.onnx")
    assert not np.allclose(filled, weight.reshape(64, 32))  # new data, not the original
    expected = (filled.T if transposed else filled) / 6
    assert np.abs(copies["S"] - expected).max() <= 1e-6 * np.abs(expected).max()
    assert np.array_equal(copies["C"], filled)


# --- 5. SIGTERM cleans up as SIGINT does ----------------------------------------------------------

SLOW_EXTRACT = """
import sys, time
from fcm import cli
from fcm.commands import extract
from fcm_core.fileio import staged_directory

def slow(args, report):  # stands in for a long conversion that is writing its outputs
    with staged_directory(args.output) as scratch:
        (scratch / "dag.json").write_bytes(b"x" * 14_000_000)
        print("staged", flush=True)
        time.sleep(120)
    return 0

extract.run = slow
sys.argv = ["fcm", "extract", "model.tflite", "-o", sys.argv[1]]
cli.run()
"""


@pytest.mark.parametrize("signum, status, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_leaves_no_partial_output(tmp_path, signum, status, word):
    out = tmp_path / "out"
    # a suite started in the background inherits SIGINT ignored, and Python then keeps it ignored:
    # the child gets the default disposition, as a command typed at a terminal has
    process = _python(SLOW_EXTRACT, str(out), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().strip() == "staged", process.stderr.read()
        assert _leftovers(tmp_path)  # the scratch folder is there while it writes
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == status, stderr
    assert f"fcm: {word}" in stderr
    assert not out.exists() and not _leftovers(tmp_path)


def test_a_signal_during_the_renames_waits_for_them(tmp_path, monkeypatch):
    """SIGTERM while the set is being renamed arrives once it is complete: all new, none lost."""
    target = tmp_path / "out"
    original = os.rename

    def rename(src, dst):
        if Path(dst).name == "b":
            os.kill(os.getpid(), signal.SIGTERM)  # held back until the renames are done
        return original(src, dst)

    from fcm import cli

    monkeypatch.setattr(os, "rename", rename)
    previous = signal.signal(signal.SIGTERM, cli.terminate)
    try:
        with pytest.raises(cli.Terminated):
            with staged_directory(target) as scratch:
                for name in "abc":
                    (scratch / name).write_text(name)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in target.iterdir()) == ["a", "b", "c"]


# --- 6. the user's umask ------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(tmp_path, umask):
    dag = seed_dag_path("mob_v2")
    plan, page = tmp_path / "plan.json", tmp_path / "page.html"
    assert _fcm("plan", str(dag), "--gpu", "H100", "-o", str(plan), umask=umask).returncode == 0
    assert _fcm("inspect", str(dag), "--html", str(page), umask=umask).returncode == 0
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "bench.md", "what fcm bench writes with it\n")
    finally:
        os.umask(old)
    for path in (plan, page, tmp_path / "bench.md"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
