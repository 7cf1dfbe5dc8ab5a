"""Builds nemesis_fast._C from csrc/: C++ CPU kernels always, CUDA kernels when they can be built.

Environment:
  NEMESIS_FAST_FORCE_CUDA=1   build the CUDA sources even without a visible GPU (needs nvcc and a CUDA torch)
  NEMESIS_FAST_SKIP_CUDA=1    never build the CUDA sources
  TORCH_CUDA_ARCH_LIST        target architectures; defaults to DEFAULT_ARCH_LIST when no GPU is visible
  CUDA_HOME                   the CUDA toolkit (the folder holding bin/nvcc and lib64)
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

import setuptools
from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
LICENSE = "Apache-2.0"


def say(message: str) -> None:
    print(f"nemesis_fast build: {message}", file=sys.stderr, flush=True)


def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def toolkit_of(nvcc: str) -> str | None:
    """The toolkit folder that `nvcc` belongs to, or None when it is a wrapper outside one."""
    home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return home if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")) else None


def find_cuda_home() -> str | None:
    """CUDA_HOME as set, else the toolkit of the nvcc on PATH, else the usual install folder.

    The nvcc on PATH may be a wrapper script that execs the toolkit's own; torch would then look for
    the CUDA headers and libraries beside the wrapper, so the real toolkit is resolved here.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc and toolkit_of(nvcc):
        return toolkit_of(nvcc)
    candidates = sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in ["/usr/local/cuda", *candidates]:
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and toolkit_of(os.path.join(home, "bin", "nvcc")):
            return home
    return None


def math_library_includes(cuda_home: str) -> list[str]:
    """Header folders of the CUDA math libraries (cuBLAS, cuSPARSE...) that ATen's CUDA headers include.

    A minimal toolkit lacks them; the NVIDIA wheels that a CUDA build of torch depends on carry them.
    """
    if os.path.exists(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    try:
        import nvidia
    except ImportError:
        return []
    found = sorted(
        {os.path.dirname(h) for p in nvidia.__path__ for h in glob.glob(os.path.join(p, "*", "include", "cusparse.h"))}
    )
    if found:
        say(f"the toolkit in {cuda_home} lacks the math library headers; using {', '.join(found)}")
    return found


def decide_cuda(torch) -> tuple[bool, str]:
    if flag("NEMESIS_FAST_SKIP_CUDA"):
        return False, "NEMESIS_FAST_SKIP_CUDA is set"
    forced = flag("NEMESIS_FAST_FORCE_CUDA")
    if torch.version.cuda is None:
        if forced:
            raise SystemExit("nemesis_fast build: NEMESIS_FAST_FORCE_CUDA=1 but this torch is a CPU-only build")
        return False, "torch is a CPU-only build"
    home = find_cuda_home()
    if home is None:
        if forced:
            raise SystemExit(
                "nemesis_fast build: NEMESIS_FAST_FORCE_CUDA=1 but no CUDA toolkit (nvcc) was found; set CUDA_HOME"
            )
        return False, "no CUDA toolkit (nvcc) found; set CUDA_HOME to build the CUDA kernels"
    os.environ["CUDA_HOME"] = home
    if forced:
        return True, f"NEMESIS_FAST_FORCE_CUDA is set (toolkit {home})"
    return True, f"torch {torch.__version__} is a CUDA {torch.version.cuda} build and nvcc was found in {home}"


def import_torch():
    """torch, the one the extension will load into; SystemExit saying what to do where there is none (pip's isolated
    build environment has none: an extension built there would be built against another torch than the user's)."""
    try:
        import torch
    except ImportError as error:
        raise SystemExit(
            "nemesis_fast build: torch is not importable here. Install torch first, then build against it without "
            "build isolation: pip install --no-build-isolation <this folder, or -e . in a checkout>"
        ) from error
    return torch


def extension_modules():
    torch = import_torch()

    with_cuda, why = decide_cuda(torch)
    from torch.utils import cpp_extension  # after decide_cuda: it reads CUDA_HOME when imported

    # torch picks the C++ standard. -fopenmp makes at::parallel_for multi-threaded; the OpenMP calls bind at
    # load time to the runtime that libtorch already loaded, so none is linked here. -fno-math-errno lets loops
    # that call sqrt vectorise (no kernel reads errno). -ffp-contract=off: no multiply and add fused into one FMA
    # (GCC fuses by default where the target has FMA), so that every float operation rounds as the torch
    # reference's does and the Gaussian noise is bit-exact across backends. -fno-trapping-math: the code never
    # traps on floating-point exceptions, so GCC may compute both sides of a select of float operations, which it
    # must do to vectorise the Box-Muller loop for AVX2 (without it: "control flow in loop", scalar code in the
    # AVX2 and default clones; only AVX-512 vectorised it, with masked operations).
    # It changes no value: results stay IEEE-rounded as written.
    cxx_flags = [
        "-O3",
        "-fvisibility=hidden",
        "-fno-math-errno",
        "-fno-trapping-math",
        "-ffp-contract=off",
        "-Wno-unknown-pragmas",
        "-Wno-maybe-uninitialized",
    ]
    if sys.platform.startswith("linux"):
        cxx_flags.append("-fopenmp")
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    define_macros: list[tuple[str, str | None]] = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    if with_cuda:
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
            say(f"no GPU visible and TORCH_CUDA_ARCH_LIST unset: building for {DEFAULT_ARCH_LIST}")
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        include_dirs += math_library_includes(os.environ["CUDA_HOME"])
        define_macros.append(("NEMESIS_FAST_WITH_CUDA", None))
        say(f"building C++ CPU kernels and CUDA kernels: {why}")
        say(f"CUDA architectures: {os.environ.get('TORCH_CUDA_ARCH_LIST', 'those of the visible GPU')}")
        extension_class = cpp_extension.CUDAExtension
        extra = {"cxx": cxx_flags, "nvcc": ["-O3", "--extended-lambda", "-lineinfo"]}
    else:
        say(f"building C++ CPU kernels only: {why}")
        extension_class = cpp_extension.CppExtension
        extra = {"cxx": cxx_flags}
    return [
        extension_class(
            "nemesis_fast._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra,
        )
    ], recording_build(cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False), torch, with_cuda)


def build_info(torch, with_cuda: bool) -> dict:
    """What _C is built against, so that a mismatched torch is reported rather than crashing."""
    return {
        "torch_version": torch.__version__,
        "cuda": with_cuda,
        "cuda_version": torch.version.cuda if with_cuda else None,
        "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if with_cuda else None,
    }


def recording_build(base: type, torch, with_cuda: bool) -> type:
    """`base` (torch's build_ext) that writes the build record, _build_info.json, beside _C when it compiles _C,
    and only then (an sdist or a metadata query leaves it alone); a _C whose record names another build (another
    torch, CUDA choice or architecture list), or has none, is compiled again, not kept as up to date. An in-place
    build (an editable install) compiles into the build folder and copies _C into the checkout: the record with it."""

    def record_beside(command, ext) -> str:
        return os.path.join(os.path.dirname(command.get_ext_fullpath(ext.name)), "_build_info.json")

    class RecordingBuild(base):
        def run(self) -> None:
            inplace = self.inplace
            super().run()
            if not inplace:
                return
            for ext in self.extensions:
                self.inplace = 0
                built = record_beside(self, ext)
                self.inplace = 1
                shutil.copyfile(built, record_beside(self, ext))

        def build_extension(self, ext) -> None:
            record = record_beside(self, ext)
            wanted = build_info(torch, with_cuda)
            try:
                with open(record) as f:
                    recorded = json.load(f)
            except (OSError, ValueError):
                recorded = None
            if recorded != wanted:
                self.force = True
            super().build_extension(ext)
            if recorded != wanted:
                os.makedirs(os.path.dirname(record), exist_ok=True)
                with open(record, "w") as f:
                    json.dump(wanted, f, indent=2)

    return RecordingBuild


def license_metadata() -> dict[str, str]:
    """The license in the form this setuptools takes: an SPDX expression from 77 on (which deprecates the old
    table form), the plain `license` field before (which knows no expression)."""
    major = int(setuptools.__version__.split(".")[0])
    return {"license_expression": LICENSE} if major >= 77 else {"license": LICENSE}


ext_modules, build_ext = extension_modules()
setup(
    **license_metadata(),
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    package_data={"nemesis_fast": ["data/mnist_sample/*", "evaluation/presets/*.toml"]},
)
