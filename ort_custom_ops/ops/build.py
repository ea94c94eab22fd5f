"""Build the FCM custom-op library: ``python -m ort_custom_ops.ops.build`` (``make setup`` runs it).

In: the C++/CUDA sources under ``ort_custom_ops/csrc``; ONNX Runtime's C/C++ headers (from
``$ORT_INCLUDE_DIR``, or fetched once from Debian's ``libonnxruntime-dev`` package into
``build/ort-headers``: the headers are in no pip wheel); CMake; nvcc when present, and then CUTLASS's
CuTe headers (``$CUTLASS_INCLUDE_DIR``, or fetched once from PyPI's ``nvidia-cutlass`` wheel into
``build/cutlass-headers``) for the Hopper kernels' tensor-core and copy-engine instructions.
Out: ``ort_custom_ops/lib/libfcm_ort_ops.so``: CPU kernels always, CUDA kernels (sm_80/86/89/90 +
PTX) when nvcc is found; without nvcc a CPU-only library, said so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # ort_custom_ops/: CMakeLists.txt, csrc/, lib/
ROOT = PACKAGE.parent
BUILD = ROOT / "build"
HEADERS_DEB = "libonnxruntime-dev"
DEBIAN_SUITE = "trixie"  # its libonnxruntime-dev is 1.21 (ORT_API_VERSION 21): loads in any newer runtime
LIBRARY_NAME = "libfcm_ort_ops.so"
CUTLASS_WHEEL = "nvidia-cutlass==4.2.0.0"  # ships CUTLASS/CuTe's headers under cutlass_library/source/include


class BuildError(Exception):
    pass


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:3])} ... failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def ort_headers() -> Path:
    """The directory holding onnxruntime_cxx_api.h: $ORT_INCLUDE_DIR, or Debian's package."""
    override = os.environ.get("ORT_INCLUDE_DIR")
    if override:
        path = Path(override)
        if not (path / "onnxruntime_cxx_api.h").is_file():
            raise BuildError(f"ORT_INCLUDE_DIR={override} has no onnxruntime_cxx_api.h")
        return path
    target = BUILD / "ort-headers"
    include = target / "usr" / "include" / "onnxruntime"
    if (include / "onnxruntime_cxx_api.h").is_file():
        return include
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise BuildError("ONNX Runtime's headers are needed: set ORT_INCLUDE_DIR to a directory holding "
                         "onnxruntime_cxx_api.h (apt-get/dpkg to fetch Debian's libonnxruntime-dev are not here)")
    print(f"fetching ONNX Runtime headers ({HEADERS_DEB}, Debian {DEBIAN_SUITE})", flush=True)
    # a private sources list and state directories: the system's apt setup is not touched
    with tempfile.TemporaryDirectory(prefix="fcm-apt-") as tmp:
        tmp = Path(tmp)
        (tmp / "lists" / "partial").mkdir(parents=True)
        (tmp / "cache" / "archives" / "partial").mkdir(parents=True)
        sources = tmp / "sources.list"
        sources.write_text(f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian "
                           f"{DEBIAN_SUITE} main\n")
        options = [f"-oDir::Etc::SourceList={sources}", "-oDir::Etc::SourceParts=/dev/null",
                   f"-oDir::State::Lists={tmp / 'lists'}", f"-oDir::Cache={tmp / 'cache'}",
                   "-oAPT::Sandbox::User=root", "-oDebug::NoLocking=1"]
        _run(["apt-get", "-q", *options, "update"])
        _run(["apt-get", "-q", *options, "download", HEADERS_DEB], cwd=tmp)
        debs = sorted(tmp.glob(f"{HEADERS_DEB}_*.deb"))
        if not debs:
            raise BuildError(f"apt-get download {HEADERS_DEB} produced no package")
        # (staged beside the target, so that the rename below stays on one file system)
        BUILD.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="ort-headers.", dir=BUILD))
        _run(["dpkg", "-x", str(debs[-1]), str(staging)])
    if not (staging / "usr" / "include" / "onnxruntime" / "onnxruntime_cxx_api.h").is_file():
        raise BuildError(f"{debs[-1].name} holds no onnxruntime_cxx_api.h")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return include


def cutlass_headers() -> Path:
    """The directory holding cute/ and cutlass/: $CUTLASS_INCLUDE_DIR, or the nvidia-cutlass wheel's."""
    override = os.environ.get("CUTLASS_INCLUDE_DIR")
    if override:
        path = Path(override)
        if not (path / "cute" / "arch" / "mma_sm90_gmma.hpp").is_file():
            raise BuildError(f"CUTLASS_INCLUDE_DIR={override} has no cute/arch/mma_sm90_gmma.hpp")
        return path
    target = BUILD / "cutlass-headers"
    if (target / "cute" / "arch" / "mma_sm90_gmma.hpp").is_file():
        return target
    print(f"fetching CUTLASS headers ({CUTLASS_WHEEL} from PyPI)", flush=True)
    import zipfile

    prefix = "cutlass_library/source/include/"
    with tempfile.TemporaryDirectory(prefix="fcm-cutlass-") as tmp:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", tmp, CUTLASS_WHEEL])
        wheels = sorted(Path(tmp).glob("nvidia_cutlass-*.whl"))
        if not wheels:
            raise BuildError(f"pip download {CUTLASS_WHEEL} produced no wheel")
        BUILD.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="cutlass-headers.", dir=BUILD))
        with zipfile.ZipFile(wheels[-1]) as wheel:
            for name in wheel.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    out = staging / name[len(prefix):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(wheel.read(name))
    if not (staging / "cute" / "arch" / "mma_sm90_gmma.hpp").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildError(f"{CUTLASS_WHEEL} holds no cute/arch/mma_sm90_gmma.hpp")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def find_nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def build(cuda: bool = True, jobs: int | None = None, quiet: bool = False) -> Path:
    if shutil.which("cmake") is None:
        raise BuildError("cmake is needed to build the custom-op library")
    BUILD.mkdir(exist_ok=True)
    headers = ort_headers()
    nvcc = find_nvcc() if cuda else None
    build_dir = BUILD / "ort_custom_ops"
    configure = ["cmake", "-S", str(PACKAGE), "-B", str(build_dir), f"-DORT_INCLUDE_DIR={headers}",
                 "-DCMAKE_BUILD_TYPE=Release", f"-DFCM_CUDA={'ON' if nvcc else 'OFF'}"]
    if nvcc:
        configure += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCUTLASS_INCLUDE_DIR={cutlass_headers()}"]
    out = _run(configure).stdout
    with_cuda = "building the CUDA kernels" in out
    if not quiet:
        print("building the FCM custom-op library " + ("with CUDA kernels" if with_cuda else "(CPU kernels only)"), flush=True)
    _run(["cmake", "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 2)])
    built = build_dir / LIBRARY_NAME
    target = PACKAGE / "lib" / LIBRARY_NAME
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_suffix(".so.partial")
    shutil.copy2(built, tmp)
    os.replace(tmp, target)
    if not quiet:
        if with_cuda:
            print(f"{target}: CPU and CUDA kernels (sm_80 for Ampere and Ada, sm_90a for Hopper, PTX for newer)")
        elif nvcc is None and cuda:
            print(f"{target}: CPU kernels only: no nvcc found (set CUDACXX to build the CUDA kernels)")
        else:
            print(f"{target}: CPU kernels only")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ort_custom_ops.ops.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-cuda", action="store_true", help="build the CPU kernels only")
    parser.add_argument("-j", "--jobs", type=int, help="parallel compile jobs")
    args = parser.parse_args(argv)
    try:
        build(cuda=not args.no_cuda, jobs=args.jobs)
    except BuildError as exc:
        print(f"fcm build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
