"""The kernel benchmark harness's CPU side: what the fwd / bwd / full closures compute and when
they build their forward, failures recorded with their first cause, the fwd + bwd check script."""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from ramac.kernels.quantile_huber import quantile_huber_loss_ref
from ramac.kernels.risk import tail_mean_ref
from ramac.perf.bench import _measure, _modes, bench_kernels, error_text

ROOT = Path(__file__).resolve().parents[1]


def _counted(fn):
    calls = []

    def make_out():
        calls.append(1)
        return fn()

    return make_out, calls


def _qh_case(B=37, K=5):
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(B, K, generator=g).requires_grad_()
    taus, target = torch.rand(B, K, generator=g), torch.randn(B, K, generator=g)
    return pred, (lambda: quantile_huber_loss_ref(pred, taus, target))


def test_modes_build_nothing_until_called():
    """No forward at construction (the old harness made one there, on the default stream, and kept
    it: the stale stream that broke every later capture of fwd + bwd); bwd makes its forward on
    its first call and keeps it, full makes one per call."""
    pred, qh = _qh_case()
    make_out, calls = _counted(qh)
    modes = _modes(make_out, [pred])
    assert calls == []
    modes["bwd"](), modes["bwd"](), modes["bwd"]()
    assert len(calls) == 1
    modes["full"](), modes["full"]()
    assert len(calls) == 3
    modes["fwd"]()
    assert len(calls) == 4


@pytest.mark.parametrize("op", ["scalar", "vector"])
def test_modes_compute_the_gradients(op):
    pred, qh = _qh_case()
    z2 = torch.randn_like(pred).requires_grad_()
    make_out, params = (qh, [pred]) if op == "scalar" else ((lambda: tail_mean_ref(pred, z2)), [pred, z2])
    out = make_out()
    want = torch.autograd.grad(out, params, torch.ones_like(out) if out.dim() else None)
    modes = _modes(make_out, params)
    with torch.no_grad():
        assert torch.equal(modes["fwd"](), out.detach())
    for mode in ("bwd", "full"):
        for _ in range(2):  # bwd differentiates its kept forward again; full a fresh one
            got = modes[mode]()
            assert len(got) == len(params)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w)


def test_a_failure_records_its_first_cause():
    def capture_like():
        try:
            raise RuntimeError("operation would make the legacy stream depend on a capturing blocking stream")
        finally:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture\nmore")

    row = _measure(capture_like, torch.device("cpu"), False, op="x")
    assert row["error"].startswith("RuntimeError: operation would make the legacy stream depend")
    assert "(then RuntimeError: CUDA error: operation failed due to a previous error during capture)" in row["error"]
    assert row["launch"] == "eager" and "median_us" not in row
    assert error_text(ValueError("plain")) == "ValueError: plain"


def test_bench_kernels_times_every_mode_on_cpu():
    rows = bench_kernels(torch.device("cpu"), B=64, K=4, compile_ref=False, ops=["quantile_huber"])
    ref = {r["mode"]: r for r in rows if r["provider"] == "reference"}
    assert set(ref) == {"fwd", "bwd", "full"}
    assert all(r["launch"] == "eager" and r["median_us"] > 0 for r in ref.values())
    assert {r["op"] for r in rows} == {"quantile_huber"}
    ran = ("reference", "triton") if os.environ.get("TRITON_INTERPRET") == "1" else ("reference",)
    assert {(r["provider"], r["mode"]) for r in rows if "median_us" in r} == {  # Triton: interpreted, or not
        (p, m) for p in ran for m in ("fwd", "bwd", "full")}                   # on CPU tensors beside a GPU


def _load_check():
    spec = importlib.util.spec_from_file_location("qh_graph_check", ROOT / "bench/studies/qh_graph_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_qh_graph_check_on_cpu(tmp_path):
    """The GPU script's CPU path: eager rows only, the goal compared, the JSON written."""
    check = _load_check()
    out = tmp_path / "qh.json"
    result = check.main(["--device", "cpu", "--batch-size", "64", "--k", "4", "--providers", "reference",
                         "--blocks", "3", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["goal_us"] == 20.0 and saved["shape"] == {"B": 64, "K": 4, "K_target": 4}
    rows = {(r["provider"], r["mode"], r["launch"]): r for r in saved["rows"]}
    assert set(rows) == {("reference", m, "eager") for m in ("fwd", "bwd", "full")}
    assert all(r["median_us"] > 0 and r["grads_match_eager"] in (True, None) for r in rows.values())
    assert saved["verdict"]["graph_full_us"] == {}  # no graphs on a CPU
    assert "no CUDA" in saved["verdict"]["summary"]
