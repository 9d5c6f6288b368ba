"""Find what breaks CUDA-graph capture of the quantile-Huber forward + backward."""

import traceback

import torch

from ramac.kernels.quantile_huber import quantile_huber_loss_ref, quantile_huber_loss_triton

B, K = 16384, 32
pred = torch.randn(B, K, device="cuda", requires_grad=True)
target = torch.randn(B, K, device="cuda")
taus = torch.rand(B, K, device="cuda")
for name, fn in (("ref", quantile_huber_loss_ref), ("triton", quantile_huber_loss_triton)):
    for variant in ("grad", "backward"):
        def step():
            loss = fn(pred, taus, target)
            if variant == "grad":
                torch.autograd.grad(loss, [pred])
            else:
                pred.grad = None
                loss.backward()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(s):
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=s):
                step()
            g.replay()
            torch.cuda.synchronize()
            print(name, variant, "captured OK")
        except Exception:
            print(name, variant, "FAILED")
            traceback.print_exc(limit=6)
