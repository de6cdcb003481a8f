"""EfficientNet-Lite0's convolution shapes, one layer at a time: hetc's x86
kernels against oneDNN's (issue 19 asked whether the generated C should call
oneDNN where it wins). Not part of `make bench`: it needs Debian's oneDNN,

    apt-get install libdnnl-dev      # oneDNN 2.6.3, OpenMP threads (libgomp)
    .venv/bin/python benchmarks/onednn_layers.py

and says so and exits with status 2 without it. oneDNN runs each layer
through its C API (f32, bias, ReLU6 as a post-op where the layer has one),
twice: with NCHW tensors at its boundaries, as hetc's graph holds them, and
in the layouts it picks itself (format "any": blocks of 16 channels),
its reorders into and out of those left out. hetc runs the same layer as
a one-layer model (NCHW in and out), the time of an empty call taken off.
Medians of 400 calls on 2 threads, both in one run.

The PyPI `onednn` wheel is not used: it is oneDNN 3.13 built with the SYCL
runtime (with its dependencies a 2 GB venv), and its CPU engine needs an
OpenCL CPU device (OCL_ICD_FILENAMES pointed at the wheel's
libintelocl.so); so set up, its layers ran 10-90% slower than Debian's
build here (2026-12-03).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HETC_THREADS", "2")

import numpy as np  # noqa: E402

# in channels, out channels, plane, kernel, stride, groups, ReLU6 after it
LAYERS = [(3, 32, 224, 3, 2, 1, 1), (32, 32, 112, 3, 1, 32, 1), (32, 16, 112, 1, 1, 1, 0),
          (16, 96, 112, 1, 1, 1, 1), (96, 96, 112, 3, 2, 96, 1), (144, 24, 56, 1, 1, 1, 0),
          (24, 144, 56, 1, 1, 1, 1), (112, 672, 14, 1, 1, 1, 1), (672, 672, 14, 5, 1, 672, 1),
          (672, 112, 14, 1, 1, 1, 0), (1152, 192, 7, 1, 1, 1, 0), (192, 1152, 7, 1, 1, 1, 1)]

HARNESS = r"""
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#define CHECK(f) do { if ((f) != dnnl_success) { printf("failed: %s\n", #f); return 1; } } while (0)
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
int main(int argc, char **argv) {
    long C = atol(argv[1]), O = atol(argv[2]), H = atol(argv[3]), K = atol(argv[4]);
    long S = atol(argv[5]), G = atol(argv[6]);
    int relu6 = atoi(argv[7]), any = atoi(argv[8]);
    long pad = K / 2, OH = (H + 2 * pad - K) / S + 1;
    dnnl_engine_t eng;
    dnnl_stream_t st;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    dnnl_dims_t sd = {1, C, H, H}, dd = {1, O, OH, OH}, bd = {O};
    dnnl_dims_t wd = {G, O / G, C / G, K, K}, wd1 = {O, C, K, K};
    dnnl_memory_desc_t smd, wmd, bmd, dmd;
    dnnl_format_tag_t io = any ? dnnl_format_tag_any : dnnl_nchw;
    CHECK(dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, io));
    CHECK(dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, io));
    CHECK(dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x));
    CHECK(dnnl_memory_desc_init_by_tag(&wmd, G > 1 ? 5 : 4, G > 1 ? wd : wd1, dnnl_f32,
                                       dnnl_format_tag_any));
    dnnl_dims_t strides = {S, S}, pl = {pad, pad}, pr = {pad, pad};
    dnnl_convolution_desc_t cd;
    CHECK(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                             dnnl_convolution_direct, &smd, &wmd, &bmd, &dmd,
                                             strides, pl, pr));
    dnnl_primitive_attr_t attr;
    CHECK(dnnl_primitive_attr_create(&attr));
    if (relu6) {
        dnnl_post_ops_t po;
        CHECK(dnnl_post_ops_create(&po));
        CHECK(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_clip, 0.f, 6.f));
        CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    dnnl_primitive_desc_t pd;
    CHECK(dnnl_primitive_desc_create(&pd, &cd, attr, eng, NULL));
    const char *impl;
    CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    dnnl_primitive_t conv;
    CHECK(dnnl_primitive_create(&conv, pd));
    dnnl_query_t what[4] = {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_weights_md,
                            dnnl_query_dst_md};
    int index[4] = {0, 0, 1, 0}, arg[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS,
                                           DNNL_ARG_DST};
    dnnl_exec_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, what[i], index[i]);
        size_t n = dnnl_memory_desc_get_size(md);
        float *p = aligned_alloc(64, (n + 63) / 64 * 64);
        for (size_t j = 0; j < n / 4; j++) p[j] = (float)(j % 13) * 0.01f;
        CHECK(dnnl_memory_create(&args[i].memory, md, eng, p));
        args[i].arg = arg[i];
    }
    double t[400];
    for (int i = 0; i < 450; i++) {
        double a = omp_get_wtime();
        CHECK(dnnl_primitive_execute(conv, st, 4, args));
        CHECK(dnnl_stream_wait(st));
        if (i >= 50) t[i - 50] = omp_get_wtime() - a;
    }
    qsort(t, 400, sizeof(double), cmp);
    printf("%.1f %s\n", t[200] * 1e6, impl);
    return 0;
}
"""


def build_harness(folder):
    """The oneDNN harness's path, or None when libdnnl-dev is missing."""
    if not os.path.exists("/usr/include/oneapi/dnnl/dnnl.h") or not shutil.which("gcc"):
        return None
    src, exe = os.path.join(folder, "conv.c"), os.path.join(folder, "conv")
    with open(src, "w") as f:
        f.write(HARNESS)
    done = subprocess.run(["gcc", "-O2", "-fopenmp", src, "-o", exe, "-ldnnl"],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"onednn_layers.py: the oneDNN harness did not build:\n{done.stderr[-2000:]}")
    return exe


def onednn_us(exe, layer, any_layout):
    out = subprocess.run([exe, *map(str, layer), str(int(any_layout))], capture_output=True,
                         text=True, timeout=600).stdout.split()
    if len(out) < 2 or out[0] == "failed:":
        return float("nan"), " ".join(out)
    return float(out[0]), out[1]


def median_us(module, x, calls=400):
    for _ in range(50):
        module(x)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        module(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def main():
    with tempfile.TemporaryDirectory() as folder:
        exe = build_harness(folder)
        if exe is None:
            print("onednn_layers.py: needs Debian's oneDNN (apt-get install libdnnl-dev) and gcc",
                  file=sys.stderr)
            sys.exit(2)
        import torch
        import torch.nn as nn

        import hetc

        x0 = torch.randn(1, 16, 4, 4)
        empty = median_us(hetc.compile(nn.ReLU(), "x86", (x0,)), x0.numpy())
        print("| layer | hetc us | oneDNN, NCHW us | oneDNN, its layouts us | oneDNN kernels |")
        print("| --- | --- | --- | --- | --- |")
        for layer in LAYERS:
            c, o, h, k, s, g, relu6 = layer
            model = nn.Sequential(nn.Conv2d(c, o, k, s, k // 2, groups=g),
                                  *([nn.ReLU6()] if relu6 else [])).eval()
            x = torch.randn(1, c, h, h)
            ours = median_us(hetc.compile(model, "x86", (x,)), x.numpy()) - empty
            nchw, impl_nchw = onednn_us(exe, layer, False)
            best, impl_any = onednn_us(exe, layer, True)
            name = f"{c} -> {o}, {h}x{h}, {k}x{k}" + (f" s{s}" if s > 1 else "") + \
                (" depthwise" if g > 1 else "")
            print(f"| {name} | {ours:.1f} | {nchw:.1f} | {best:.1f} | {impl_nchw}; {impl_any} |",
                  flush=True)


if __name__ == "__main__":
    main()
