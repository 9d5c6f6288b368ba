"""Which variants of the quantile-Huber forward + backward survive CUDA-graph capture (GPU):

    python -m bench.studies.debug_capture
"""

import traceback

import torch

from ramac.kernels.quantile_huber import quantile_huber_loss_ref, quantile_huber_loss_triton


def try_capture(step) -> None:
    """Warm step() up on a side stream, capture it, replay once; raises what capture raises."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s):
        step()
    g.replay()
    torch.cuda.synchronize()


def main(B: int = 16_384, K: int = 32):
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
            try:
                try_capture(step)
                print(name, variant, "captured OK")
            except Exception:  # noqa: BLE001 - report and go on to the next variant
                print(name, variant, "FAILED")
                traceback.print_exc(limit=6)


if __name__ == "__main__":
    main()
