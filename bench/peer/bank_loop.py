#!/usr/bin/env python3
"""Time PEFT's mixed-batch LoRA forward in PyTorch on the CPU: a batch whose rows use different adapters, served
by a loop over the adapters, the peer of bench/bench_bank.cpp's `<shape>/bank_mixed` (same shapes: 16 adapters of
ranks 4, 8, ..., 64 over one (features x features) layer, every row on a uniformly random adapter).

The loop is HuggingFace PEFT's, src/peft/tuners/lora/layer.py (LoraLayer._mixed_batch_forward): for each adapter
in the batch, gather its rows, lora_B(lora_A(rows)) * scaling, and add the result back at the same rows. Only the
adapters' part is timed (result starts at zero), as in the C++ benchmark; inference, no autograd.

Prints `<shape>/peft_mixed_batch  median  (min .. max)` in milliseconds.
"""
import argparse, statistics, time
import torch

SHAPES = {"small": (128, 512), "medium": (256, 1024), "large": (2048, 4096)}  # name: (rows, features)
ADAPTERS = 16


def timeit(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times), max(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, (rows, features) in SHAPES.items():
        x = torch.randn(rows, features)
        ranks = [4 * (k + 1) for k in range(ADAPTERS)]
        a = [torch.randn(r, features) * 0.02 for r in ranks]
        b = [torch.randn(features, r) * 0.01 for r in ranks]
        scaling = [2.0] * ADAPTERS  # alpha = 2 r
        slots = torch.randint(0, ADAPTERS, (rows,))
        groups = [torch.nonzero(slots == k).flatten() for k in range(ADAPTERS)]  # PEFT computes these per call too

        def mixed():
            with torch.no_grad():
                result = torch.zeros(rows, features)
                indices = [torch.nonzero(slots == k).flatten() for k in range(ADAPTERS)]
                for k, index in enumerate(indices):
                    if index.numel() == 0:
                        continue
                    sub_batch = x[index]
                    result[index] += (sub_batch @ a[k].T) @ b[k].T * scaling[k]
                return result

        # The loop against the dense sum it must equal.
        with torch.no_grad():
            expected = torch.zeros(rows, features)
            for k, index in enumerate(groups):
                expected[index] = (x[index] @ (b[k] @ a[k]).T) * scaling[k]
        assert torch.allclose(mixed(), expected, rtol=1e-3, atol=1e-3)
        med, lo, hi = timeit(mixed, args.reps)
        print(f"{name}/peft_mixed_batch  {med:.3f}  ({lo:.3f} .. {hi:.3f})  rows={rows} features={features} "
              f"adapters={ADAPTERS} ranks=4..64 threads={args.threads}")


if __name__ == "__main__":
    main()
