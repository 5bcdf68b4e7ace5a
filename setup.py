"""Build of daam_fast._C through CMake (CMakeLists.txt); metadata lives in pyproject.toml.

Design choice: the extension is a plain pybind11 module that takes raw pointers, sizes and
element strides (no libtorch link). It builds in seconds, does not depend on the torch ABI
(one wheel per Python, not per torch version), and setup.py needs no torch at build time.

Build switches (also in the README table), and how they relate:
  DAAM_FAST_SKIP_EXT_BUILD=1   no extension at all: a pure-PyTorch install (implies the next).
  DAAM_FAST_SKIP_CUDA_BUILD=1  C++ CPU kernels only, even if nvcc is found.
  DAAM_FAST_CUDA_ARCHS="80;90" CMAKE_CUDA_ARCHITECTURES for the CUDA kernels (default 80;90).
Without cmake or a C++ compiler the build of the extension fails softly: the package still
installs and runs on PyTorch ops, with one clear warning here and one at import.
"""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name):
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any build failure degrades to pure PyTorch
            self.warn("=" * 72)
            self.warn(f"daam_fast: the compiled extension could not be built ({e}).")
            self.warn("daam_fast will run on PyTorch ops only (correct, slower on the CPU).")
            self.warn("=" * 72)

    def build_extension(self, ext):
        cmake = shutil.which("cmake")
        if cmake is None:
            try:
                import cmake as cmake_pkg  # the PyPI wheel
                cmake = os.path.join(cmake_pkg.CMAKE_BIN_DIR, "cmake")
            except ImportError as e:
                raise RuntimeError("cmake not found") from e
        import pybind11

        out_dir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        build_temp = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        os.makedirs(build_temp, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DDAAM_FAST_SKIP_CUDA={'ON' if _flag('DAAM_FAST_SKIP_CUDA_BUILD') else 'OFF'}",
        ]
        archs = os.environ.get("DAAM_FAST_CUDA_ARCHS")
        if archs:
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
        if shutil.which("ninja"):
            args.append("-GNinja")
        subprocess.run([cmake, ROOT, *args], cwd=build_temp, check=True)
        # the build log (nvcc's -Xptxas -v report: registers, stack, spills per kernel) is kept in
        # build/daam_fast_C-build.log; tests/test_gpu_compile.py checks it for spills
        res = subprocess.run([cmake, "--build", ".", "-j", str(os.cpu_count() or 2)], cwd=build_temp,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stdout.write(res.stdout)
        os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
        with open(os.path.join(ROOT, "build", "daam_fast_C-build.log"), "w") as f:
            f.write(res.stdout)
        if res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, res.args, res.stdout)


ext_modules = [] if _flag("DAAM_FAST_SKIP_EXT_BUILD") else [CMakeExtension("daam_fast._C")]
setup(ext_modules=ext_modules, cmdclass={"build_ext": CMakeBuild})
