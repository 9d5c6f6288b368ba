"""Fused IQN quantile head vs the reference op: values and gradients, stacked and not."""

import json
import math

import pytest
import torch

from ramac import kernels
from ramac.kernels import iqn_critic
from ramac.kernels.iqn_critic import MAX_K, _Plan, iqn_quantiles, iqn_quantiles_ref, iqn_quantiles_triton
from ramac.kernels.iqn_launch import DEFAULT_RULES, PROGRAMS, launch_configs
from ramac.nets import IQNCritic

from .helpers import compiled_graphs

NAMES = ("trunk", "cos_w", "cos_b", "head_w", "head_b", "out_w", "out_b")

# (C or None, B, K, emb, n_cos, hidden, taus): "sample" (..., B, K), "shared" (K,), "entry" (C, 1, K),
# "batch" (B, K) shared by the C entries. Odd B and K leave partial blocks; emb 24, n_cos 7 and
# hidden 40 are padded inside the kernel.
SHAPES = [
    (None, 37, 13, 32, 8, 64, "sample"),
    (None, 1, 1, 16, 16, 32, "sample"),
    (None, 6, 8, 24, 7, 40, "shared"),
    (1, 19, 8, 32, 16, 64, "sample"),
    (4, 5, 6, 16, 8, 48, "shared"),
    (4, 7, 3, 16, 8, 32, "entry"),
    (4, 3, 5, 16, 8, 32, "batch"),
    (2, 9, 6, 128, 8, 256, "sample"),  # emb 128: in bf16 the H200-timed rules' launch configurations
]


def make(C, B, K, E, N, H, taus="sample", dtype=torch.float32, device="cpu", seed=0, cos_bias=0.0, head_bias=0.0):
    """Random inputs shaped as IQNCritic's parameters (out_w larger than its init, so gradients are well scaled)."""
    g = torch.Generator().manual_seed(seed)
    lead = (C,) if C else ()

    def rnd(*shape, scale=1.0, shift=0.0):
        return (scale * torch.randn(*lead, *shape, generator=g) + shift).to(device, dtype).requires_grad_()

    params = [rnd(B, E), rnd(E, N, scale=0.3), rnd(E, scale=0.3, shift=cos_bias), rnd(H, E, scale=0.3),
              rnd(H, scale=0.3, shift=head_bias), rnd(1, H, scale=0.3), rnd(1)]
    shape = {"sample": (*lead, B, K), "shared": (K,), "entry": (C, 1, K), "batch": (B, K)}[taus]
    return params, torch.rand(shape, generator=g).to(device)


def value_and_grads(fn, params, taus, grad_out=None):
    out = fn(params[0], taus, *params[1:])
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device)
    return out.detach(), torch.autograd.grad(out, params, grad_out), grad_out


def assert_close(got, want, what, rel=1e-5):
    """Elementwise: |got - want| <= rel * max(1, max |want|) + rel * |want|."""
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got.float(), want.float(), atol=rel * scale, rtol=rel, msg=lambda m: f"{what}: {m}")


def check(params, taus, dtype=torch.float32, **options):
    """Kernel vs reference: values, each gradient's dtype and value. bf16 (flash-attention's rule): the
    kernel's error against the fp32 reference at most twice torch's own bf16 error, plus 1 % of the scale."""
    q, grads, g = value_and_grads(lambda *a: iqn_quantiles_triton(*a, **options), params, taus)
    assert q.dtype == torch.float32
    assert [t.dtype for t in grads] == [p.dtype for p in params]
    if dtype == torch.float32 and all(p.dtype == torch.float32 for p in params):
        q_ref, grads_ref, _ = value_and_grads(iqn_quantiles_ref, params, taus, g)
        assert_close(q, q_ref, "q")
        for name, a, b in zip(NAMES, grads, grads_ref):
            assert_close(a, b, f"d{name}")
        return
    q_low, grads_low, _ = value_and_grads(iqn_quantiles_ref, params, taus, g)
    params32 = [p.detach().float().requires_grad_() for p in params]
    q_ref, grads_ref, _ = value_and_grads(iqn_quantiles_ref, params32, taus, g)
    for name, a, low, want in zip(("q",) + NAMES, (q, *grads), (q_low, *grads_low), (q_ref, *grads_ref)):
        err, err_torch = (a.float() - want).abs().max().item(), (low.float() - want).abs().max().item()
        assert err <= 2 * err_torch + 1e-2 * want.abs().max().item() + 1e-6, (name, err, err_torch)


@pytest.mark.parametrize("C,B,K,E,N,H,taus", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_reference(C, B, K, E, N, H, taus, dtype, device):
    params, t = make(C, B, K, E, N, H, taus, dtype, device)
    check(params, t, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fractions_at_zero_and_one_and_dead_relus(dtype, device):
    # negative biases leave most of phi and h at 0; tau = 0 and 1 give features 1 and (-1)^j
    params, _ = make(2, 11, 6, 16, 8, 32, dtype=dtype, device=device, seed=2, cos_bias=-0.6, head_bias=-0.5)
    taus = torch.tensor([0.0, 1.0, 0.0, 0.5, 1.0, 0.25], device=device)
    check(params, taus, dtype)
    with torch.no_grad():
        phi_pre = torch.cos(taus[:, None] * torch.pi * torch.arange(8, device=device)) @ params[1][0].float().T
        assert ((phi_pre + params[2][0].float()) <= 0).float().mean() > 0.4


def test_all_relus_dead(device):
    # every h is 0: q = out_b, and only out_b gets a non-zero gradient
    params, taus = make(None, 9, 4, 16, 8, 32, device=device, head_bias=-100.0)
    q, grads, g = value_and_grads(iqn_quantiles_triton, params, taus)
    torch.testing.assert_close(q, params[6].detach().expand(9, 4))
    assert all(bool((d == 0).all()) for d in grads[:6])
    torch.testing.assert_close(grads[6], g.sum().reshape(1))


def test_bf16_trunk_with_fp32_weights(device):
    # the autocast case: trunk bf16 (from merge_fc), parameters fp32; matmuls in bf16, fp32 weight grads
    params, taus = make(2, 10, 5, 16, 8, 32, device=device, seed=3)
    params[0] = params[0].detach().bfloat16().requires_grad_()
    check(params, taus, torch.bfloat16)


def test_blocks_programs_and_determinism(device):
    # small blocks and 2 programs: several row blocks and hidden chunks per program
    params, taus = make(2, 15, 3, 24, 8, 40, device=device, seed=4)
    options = dict(block_m=16, block_n=16, programs=2)
    q, first, g = value_and_grads(lambda *a: iqn_quantiles_triton(*a, **options), params, taus)
    q_ref, want, _ = value_and_grads(iqn_quantiles_ref, params, taus, g)
    assert_close(q, q_ref, "q")
    for name, a, b in zip(NAMES, first, want):
        assert_close(a, b, f"d{name}")
    _, again, _ = value_and_grads(lambda *a: iqn_quantiles_triton(*a, **options), params, taus, g)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_tuning_rules_from_a_file(tmp_path, monkeypatch, device):
    """RAMAC_IQN_TUNING's rules come first, per kernel kind, within their dtype, emb and rows;
    larger problems fall through to the defaults; the kernels give the reference's results."""
    rules = [{"dtype": "float32", "max_emb": 16, "max_rows": 60, "fwd": [16, 16, 4, 1], "rows": [32, 16, 4, 1],
              "programs": 3},
             {"dtype": "float32", "emb": 32, "max_rows": 60, "head": [64, 64, 4, 2]},  # another width
             {"dtype": "float32", "max_rows": 60, "head": [32, 32, 4, 2], "fwd": [64, 64, 8, 2]}]  # fwd: rule 0's
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps({"rules": rules}))
    monkeypatch.setenv("RAMAC_IQN_TUNING", str(path))
    params, taus = make(2, 7, 4, 16, 8, 40, device=device, seed=6)  # 56 rows
    plan = _Plan(params[0], taus, *params[1:], None, None, None)
    assert plan.launch == {"fwd": (4, 16, 4, 1), "rows": (8, 16, 4, 1), "head": (8, 32, 4, 2)}
    assert plan.default_programs == 3
    check(params, taus)
    big, taus = make(2, 9, 4, 16, 8, 40, device=device, seed=6)  # 72 rows: the defaults
    monkeypatch.delenv("RAMAC_IQN_TUNING")
    want = _Plan(big[0], taus, *big[1:], None, None, None).launch
    monkeypatch.setenv("RAMAC_IQN_TUNING", str(path))
    assert _Plan(big[0], taus, *big[1:], None, None, None).launch == want
    assert launch_configs(torch.float32, 16, 60)[0] != launch_configs(torch.float32, 16, 61)[0]
    # the programs come with the rows kernel's rule, not from a rule that names only the forward
    fwd_only = {"dtype": "float32", "fwd": [16, 16, 4, 1], "programs": 7}
    for name, doc in (("fwd-first.json", [fwd_only, rules[0]]), ("fwd-only.json", [fwd_only])):
        (tmp_path / name).write_text(json.dumps(doc))
    monkeypatch.setenv("RAMAC_IQN_TUNING", str(tmp_path / "fwd-first.json"))
    assert launch_configs(torch.float32, 16, 60)[1] == 3
    monkeypatch.setenv("RAMAC_IQN_TUNING", str(tmp_path / "fwd-only.json"))
    assert launch_configs(torch.float32, 16, 60)[1] == launch_configs(torch.float32, 16, 61)[1] == PROGRAMS


@pytest.mark.parametrize("text,problem", [("not json", "cannot read"), ('[{"fwd": [1, 2, 3]}]', "rule 0 is malformed"),
                                          ('[{"max_rows": -1}]', "rule 0 is malformed"),
                                          ('[{"dtype": "bf16"}]', "rule 0 is malformed"),
                                          ('[{"fwd": [48, 32, 4, 1]}]', "rule 0 is malformed"),
                                          ('[{"head": [8, 32, 4, 2]}]', "rule 0 is malformed"),  # < 16 rows
                                          ('{"rule": []}', "expected a list")])
def test_a_bad_tuning_file_is_an_error_naming_it(tmp_path, monkeypatch, text, problem):
    path = tmp_path / "bad.json"
    path.write_text(text)
    monkeypatch.setenv("RAMAC_IQN_TUNING", str(path))
    with pytest.raises(ValueError, match=f"RAMAC_IQN_TUNING={path}: {problem}"):
        launch_configs(torch.bfloat16, 128, 8192)
    monkeypatch.setenv("RAMAC_IQN_TUNING", str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="cannot read"):
        launch_configs(torch.bfloat16, 128, 8192)


def test_default_rules_cover_every_dtype_and_width():
    for dtype in (torch.float32, torch.bfloat16):
        for e_p in (16, 64, 128, 256):
            configs, programs = launch_configs(dtype, e_p, 10**9)
            assert set(configs) == {"fwd", "rows", "head"} and programs > 0
    assert all(r["dtype"] in ("float32", "bfloat16") for r in DEFAULT_RULES)


def test_blocks_keep_sixteen_rows_for_the_backwards_dots(device):
    # a block of 8 rows (2 samples of K_P = 4) would give the backward's weight-gradient dots K = 8,
    # which Triton refuses to compile for a GPU: blocks are raised to 16 rows (4 samples)
    params, taus = make(2, 7, 4, 16, 8, 40, device=device, seed=6)
    plan = _Plan(params[0], taus, *params[1:], 8, None, None)
    assert {kind: launch[0] for kind, launch in plan.launch.items()} == {"fwd": 4, "rows": 4, "head": 4}
    check(params, taus, block_m=8)


def test_some_inputs_without_grad(device):
    params, taus = make(None, 8, 4, 16, 8, 32, device=device, seed=5)
    head = [p.detach() for p in params[:3]] + params[3:]  # only the head's weights: the rows kernel is skipped
    rows = params[:3] + [p.detach() for p in params[3:]]  # only trunk and cos layer: the head kernel is skipped
    trunk = params[:1] + [p.detach() for p in params[1:]]  # the actor's risk term: no cos-layer partials
    cos = [params[0].detach()] + params[1:3] + [p.detach() for p in params[3:]]  # the cos layer alone
    for ps in (head, rows, trunk, cos):
        wrt = [p for p in ps if p.requires_grad]
        got = torch.autograd.grad(iqn_quantiles_triton(ps[0], taus, *ps[1:]).sum(), wrt)
        want = torch.autograd.grad(iqn_quantiles_ref(ps[0], taus, *ps[1:]).sum(), wrt)
        for a, b in zip(got, want):
            assert_close(a, b, "grad")
    with torch.no_grad():
        got = iqn_quantiles_triton(params[0], taus, *params[1:])
        assert_close(got, iqn_quantiles_ref(params[0], taus, *params[1:]), "q")


def _published_quantiles(critic, trunk, taus):
    """IQNCritic.quantiles as it was written before it went through kernels.iqn_quantiles (8ffb385)."""
    freqs = math.pi * torch.arange(critic.cos_fc.in_features, dtype=torch.float32)
    phi = torch.relu(critic.cos_fc(torch.cos(taus[..., None] * freqs)))
    if phi.dim() == 2:
        phi = phi[None]
    h = torch.relu(critic.head_fc(trunk[:, None, :] * phi))
    with torch.autocast(h.device.type, enabled=False):
        return critic.out(h.float()).squeeze(-1)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
def test_reference_is_the_module(shared, bf16):
    # the module, the reference op and the formula the module had before are one computation:
    # values and every parameter's gradient, fp32 and under bf16 autocast
    torch.manual_seed(0)
    critic = IQNCritic(5, 3, embedding_dim=32, n_cos=16, hidden=64)
    obs, act = torch.randn(7, 5), torch.randn(7, 3)
    taus = torch.rand(4 if shared else (7, 4))
    results = []
    for fn in (critic.quantiles, lambda t, u: _published_quantiles(critic, t, u)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            q = fn(critic.trunk(obs, act), taus)
        results.append([q.detach(), *torch.autograd.grad(q.sum(), list(critic.parameters()))])
    for got, want in zip(*results):
        assert torch.equal(got, want)
    args = (critic.cos_fc.weight, critic.cos_fc.bias, critic.head_fc.weight, critic.head_fc.bias,
            critic.out.weight, critic.out.bias)
    trunk = critic.trunk(obs, act)
    assert torch.equal(iqn_quantiles_ref(trunk, taus, *args), critic.quantiles(trunk, taus))


def test_stacked_reference_is_each_entry():
    params, taus = make(3, 6, 5, 16, 8, 32, taus="batch")
    stacked = iqn_quantiles_ref(params[0], taus, *params[1:])
    each = torch.stack([iqn_quantiles_ref(params[0][c], taus, *(p[c] for p in params[1:])) for c in range(3)])
    torch.testing.assert_close(stacked, each, atol=1e-6, rtol=1e-6)


def test_public_op_on_cpu_is_the_reference():
    params, taus = make(2, 9, 4, 16, 8, 32)
    want = iqn_quantiles_ref(params[0], taus, *params[1:])
    for backend in ("auto", "triton"):  # Triton runs only on CUDA tensors
        with kernels.use(backend):
            assert torch.equal(iqn_quantiles(params[0], taus, *params[1:]), want)
    assert kernels.iqn_quantiles is iqn_quantiles and kernels.iqn_quantiles_ref is iqn_quantiles_ref


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the public op takes the kernel only on CUDA tensors")
def test_public_op_on_cuda_takes_the_kernel_where_it_was_measured_faster():
    from ramac.kernels.iqn_critic import AUTO_ROWS

    params, taus = make(2, 9, 4, 16, 8, 32, device="cuda", dtype=torch.bfloat16)
    assert type(iqn_quantiles(params[0], taus, *params[1:]).grad_fn).__name__ == "IQNQuantilesFnBackward"
    with kernels.use("reference"):
        assert type(iqn_quantiles(params[0], taus, *params[1:]).grad_fn).__name__ != "IQNQuantilesFnBackward"
    for dtype, B in ((torch.float32, 9), (torch.bfloat16, AUTO_ROWS // 4 + 1)):  # fp32, and too many rows
        params, taus = make(None, B, 4, 16, 8, 32, device="cuda", dtype=dtype)
        assert type(iqn_quantiles(params[0], taus, *params[1:]).grad_fn).__name__ != "IQNQuantilesFnBackward"


def test_rejects_bad_shapes(device):
    params, taus = make(None, 4, 3, 16, 8, 32, device=device)
    with pytest.raises(ValueError, match="head_w"):
        iqn_quantiles_ref(params[0], taus, params[1], params[2], params[3].T, *params[4:])
    with pytest.raises(ValueError, match="taus"):
        iqn_quantiles_ref(params[0], torch.rand(5, 3, device=device), *params[1:])
    with pytest.raises(ValueError, match="at most"):
        iqn_quantiles_triton(params[0], torch.rand(MAX_K + 1, device=device), *params[1:])


@pytest.mark.parametrize("critics", [None, 2])
def test_under_compile_stacked_seeds_fold_into_one_operator_call(critics, monkeypatch, device):
    # under vmap (seeds stacked, ramac.train.stacked) the default traces the reference (the operator
    # there is not yet timed against Inductor's code); RAMAC_IQN_UNDER_COMPILE=1 takes the operator,
    # whose vmap rule folds the seeds (and each seed's own critics) into one call, with each seed's
    # own values and gradients
    K = 3
    seeds = [make(critics, 9, 5, 16, 8, 32, "sample", device=device, seed=k) for k in range(K)]
    taus = seeds[0][1]
    stacked = [torch.stack([p[i].detach() for p, _ in seeds]).requires_grad_() for i in range(len(NAMES))]
    g = torch.randn(K, *seeds[0][0][0].shape[:-1], taus.shape[-1], device=device)
    fn = torch.func.vmap(lambda *p: iqn_quantiles(p[0], taus, *p[1:]))

    def step(*params):
        q = fn(*params)
        return q, torch.autograd.grad(q, params, g)

    with kernels.use("auto"):
        monkeypatch.delenv("RAMAC_IQN_UNDER_COMPILE", raising=False)
        _, seen = compiled_graphs(fn, *stacked)
        assert seen and not any("ramac.iqn_quantiles" in code for code in seen)
        monkeypatch.setenv("RAMAC_IQN_UNDER_COMPILE", "1")
        _, seen = compiled_graphs(fn, *stacked)
        assert any("ramac.iqn_quantiles" in code for code in seen)
        torch._dynamo.reset()
        launches = []  # the operator's forward launches (without the rule vmap would run it per seed)
        forward = iqn_critic._Plan.forward
        monkeypatch.setattr(iqn_critic._Plan, "forward", lambda plan: launches.append(1) or forward(plan))
        q, grads = torch.compile(step, backend="aot_eager")(*stacked)
    torch._dynamo.reset()
    assert len(launches) == 1
    for k, (params, _) in enumerate(seeds):
        q_ref, grads_ref, _ = value_and_grads(iqn_quantiles_ref, params, taus, g[k])
        assert_close(q[k], q_ref, f"q of seed {k}")
        for name, got, want in zip(NAMES, grads, grads_ref):
            assert_close(got[k], want, f"{name} of seed {k}")


def test_under_compile_setting_is_checked(monkeypatch):
    monkeypatch.setenv("RAMAC_IQN_UNDER_COMPILE", "off")
    with pytest.raises(ValueError, match="RAMAC_IQN_UNDER_COMPILE must be auto, 0 or 1, got 'off'"):
        iqn_critic.under_compile()


@pytest.mark.parametrize("stacked", [None, 2])
def test_custom_operator_registrations(stacked, device):
    # schema, fake (meta) shapes and strides and the autograd registration of ramac::iqn_quantiles and
    # of its backward operator, as torch.compile needs them; emb 12 and n_cos 8 are padded inside the
    # kernels (their gradients come from padded buffers: the strides must still be the fake's)
    params, taus = make(stacked, 5, 4, 12, 8, 32, "sample", device=device)
    torch.library.opcheck(torch.ops.ramac.iqn_quantiles.default, (params[0], taus, *params[1:]),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    dq = torch.randn(*params[0].shape[:-1], 4, device=device)
    detached = [p.detach() for p in params]
    torch.library.opcheck(torch.ops.ramac.iqn_quantiles_backward.default,
                          (dq, detached[0], taus, *detached[1:], True, True, True),
                          test_utils=("test_schema", "test_faketensor"))
    # the actor's risk term: the trunk's gradient only (the cos layer's partial sums not computed)
    torch.library.opcheck(torch.ops.ramac.iqn_quantiles_backward.default,
                          (dq, detached[0], taus, *detached[1:], True, False, False),
                          test_utils=("test_schema", "test_faketensor"))


def _traces_operator(params, taus) -> bool:
    _, seen = compiled_graphs(lambda *p: iqn_quantiles(p[0], taus, *p[1:]), *params)
    assert seen
    return any("ramac.iqn_quantiles" in code for code in seen)


def test_under_compile_the_custom_operator_runs_where_the_speed_rule_says(monkeypatch, device):
    # by default compiled code takes the fused kernels (one opaque operator) where eager code would (a
    # bf16 trunk of at most AUTO_ROWS rows) and gives Inductor the reference to fuse elsewhere;
    # RAMAC_IQN_UNDER_COMPILE=0 never takes it, =1 always, with the reference's values and gradients
    params, taus = make(None, 9, 5, 16, 8, 32, "sample", device=device)
    params16 = [p.detach().bfloat16().requires_grad_() for p in params]
    q_ref, grads_ref, g = value_and_grads(iqn_quantiles_ref, params, taus)

    def step(*params):
        q = iqn_quantiles(params[0], taus, *params[1:])
        return q, torch.autograd.grad(q, params, g)

    with kernels.use("auto"):
        monkeypatch.delenv("RAMAC_IQN_UNDER_COMPILE", raising=False)
        assert _traces_operator(params16, taus) and not _traces_operator(params, taus)
        monkeypatch.setenv("RAMAC_IQN_UNDER_COMPILE", "0")
        assert not _traces_operator(params16, taus)
        monkeypatch.setenv("RAMAC_IQN_UNDER_COMPILE", "auto")
        monkeypatch.setattr(iqn_critic, "AUTO_ROWS", 9 * 5 - 1)  # one row too many for the rule
        assert not _traces_operator(params16, taus)
        monkeypatch.setenv("RAMAC_IQN_UNDER_COMPILE", "1")
        assert _traces_operator(params, taus)
        torch._dynamo.reset()
        q, grads = torch.compile(step, backend="aot_eager")(*params)
    assert_close(q, q_ref, "q")
    for name, got, want in zip(NAMES, grads, grads_ref):
        assert_close(got, want, name)
    torch._dynamo.reset()
