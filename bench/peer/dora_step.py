#!/usr/bin/env python3
"""Time one DoRA training step of a linear layer in PyTorch on the CPU (and LoRA's with --with-lora), in the
style of ../shared/peer/lora_step.py (same sizes, threads and timing), the peer of bench/bench_dora.cpp.

The DoRA step is written from HuggingFace PEFT's formulas, src/peft/tuners/lora/dora.py
(DoraLinearLayer.get_weight_norm and .forward) and variants.py (DoraLinearVariant.forward), without dropout:
    lora_weight = B @ A
    weight_norm = ||W + s * lora_weight||, per output row, detached (the paper's section 4.3)
    mag_norm_scale = m / weight_norm
    result = base_result + (mag_norm_scale - 1) * base_result + mag_norm_scale * s * lora_B(lora_A(x))
with base_result = x W^T. The gradients of x, A, B and m are what backward computes.
"""
import argparse, statistics, time
import torch
import torch.nn.functional as F

SIZES = {  # name: (tokens, in_features, out_features, lora_rank)
    "small": (128, 512, 512, 8),
    "medium": (256, 1024, 1024, 16),
    "large": (512, 4096, 4096, 16),
}


def timeit(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times), max(times)


def dora_output(x, w, a, b, m, s):
    """PEFT's DoRA linear output (bias-free base layer, no dropout): base_result + the DoRA term."""
    base_result = F.linear(x, w)
    lora_weight = b @ a
    weight_norm = torch.linalg.norm(w + s * lora_weight.detach(), dim=1).detach()
    mag_norm_scale = (m / weight_norm).view(1, -1)
    lora_result = F.linear(F.linear(x, a), b)
    return base_result + (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--with-lora", action="store_true",
                   help="also time LoRA's step in this process (../shared/peer/lora_step.py is the reference one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.sizes.split(","):
        n, din, dout, r = SIZES[name]
        s = 2.0
        x = torch.randn(n, din, requires_grad=True)
        w = torch.randn(dout, din) / din ** 0.5
        dy = torch.randn(n, dout)
        a = (torch.randn(r, din) / din ** 0.5).requires_grad_()
        b = (torch.randn(dout, r) * 0.01).requires_grad_()
        m = torch.linalg.norm(w, dim=1).clone().requires_grad_()

        def lora():
            x.grad = a.grad = b.grad = None
            (F.linear(x, w) + s * F.linear(F.linear(x, a), b)).backward(dy)

        def dora():
            x.grad = a.grad = b.grad = m.grad = None
            dora_output(x, w, a, b, m, s).backward(dy)

        cases = (("lora", lora), ("dora", dora)) if args.with_lora else (("dora", dora),)
        for label, fn in cases:
            med, lo, hi = timeit(fn, args.reps)
            print(f"{name}/{label}_step  {med:.3f}  ({lo:.3f} .. {hi:.3f})  n={n} in={din} out={dout} r={r}")


if __name__ == "__main__":
    main()
