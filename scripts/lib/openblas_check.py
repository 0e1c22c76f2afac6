# Prints "ok" if PyTorch's matrix products (OpenBLAS underneath) agree with a reference that uses no BLAS, for
# float and double and awkward shapes, and "wrong" otherwise; with OPENBLAS_VERBOSE=2 OpenBLAS also prints the
# kernel it chose ("Core: ..."). scripts/bench uses it to pick the peer's OpenBLAS kernel.
import sys, torch
torch.manual_seed(0)
worst = 0.0
for dtype in (torch.float32, torch.float64):
    for (m, k, n) in ((97, 131, 89), (256, 512, 128), (1, 300, 7), (513, 64, 1025)):
        a = torch.randn(m, k, dtype=dtype); b = torch.randn(k, n, dtype=dtype)
        ref = (a.double().unsqueeze(2) * b.double().unsqueeze(0)).sum(1)
        got = (a @ b).double()
        err = ((got - ref).norm() / ref.norm()).item()
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        worst = max(worst, err / tol)
print("ok" if worst < 1 else "wrong", worst)
