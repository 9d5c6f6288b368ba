"""Launch configurations of the fused IQN critic's kernels (kernels/iqn_critic.py): rules by dtype,
embedding width and problem size, timed on an H200 (DEFAULT_RULES), with a tuning study's rules
(RAMAC_IQN_TUNING=FILE.json, bench/studies/iqn_tune.py) ahead of them."""

from __future__ import annotations

import os

import torch

# rows (b, k) per block at least: the backward's weight-gradient dots reduce over a block's rows,
# and tl.dot compiled for a GPU needs K >= 16 (the interpreter takes fewer)
MIN_DOT_ROWS = 16
KINDS = ("fwd", "rows", "head")  # the forward, the backward's row-wise and head-weight kernels
# Rules, first match wins: "dtype" (torch dtype name), "emb" and "max_emb" (the embedding width
# padded to a power of two: equal to, at most) and "max_rows" (C x B x K, all stack entries)
# select; each kernel kind then gets [block_m (rows per block, raised to K_P), block_n (hidden units per chunk), warps, stages], and
# "programs" sets the backward's programs over all stack entries (and hidden chunks), taken from the
# rule that gives "rows".
# bench/studies/iqn_tune.py times the alternatives on a GPU and writes rules in this form, which
# RAMAC_IQN_TUNING=FILE.json puts ahead of these.
DEFAULT_RULES = (
    # timed on an H200 (bench/results/iqn-tune-H200/: RADAC's critic, batch 256, K 32, hidden 256,
    # bf16): one critic's call (8,192 rows) fwd 12.5 -> 8.8 us, rows 33.2 -> 24.6, head 39.4 -> 28.3;
    # 16 stacked seeds (131,072 rows) fwd 53.6 -> 47.0, rows 254 -> 165, head 241 -> 137
    {"dtype": "bfloat16", "emb": 128, "max_rows": 8192, "fwd": [64, 128, 8, 1], "rows": [64, 128, 8, 1],
     "head": [128, 64, 4, 2], "programs": 4096},
    {"dtype": "bfloat16", "emb": 128, "fwd": [128, 64, 8, 1], "rows": [128, 64, 8, 1], "head": [32, 128, 4, 2],
     "programs": 256},
    # not timed (picked so that ptxas reports no spills at emb <= 128; the backward at emb 256
    # spills a few hundred bytes)
    {"dtype": "bfloat16", "max_emb": 64, "fwd": [128, 64, 8, 2], "rows": [64, 64, 8, 2], "head": [64, 64, 8, 2]},
    {"dtype": "bfloat16", "max_emb": 128, "fwd": [128, 64, 8, 2], "rows": [32, 64, 8, 2], "head": [32, 64, 8, 2]},
    {"dtype": "bfloat16", "fwd": [64, 64, 8, 2], "rows": [32, 64, 8, 2], "head": [32, 64, 8, 2]},
    {"dtype": "float32", "max_emb": 64, "fwd": [64, 32, 8, 1], "rows": [32, 32, 8, 1], "head": [32, 32, 8, 1]},
    {"dtype": "float32", "fwd": [32, 32, 8, 1], "rows": [32, 32, 8, 1], "head": [32, 32, 8, 1]},
)
PROGRAMS = 512  # backward programs over all stack entries (and hidden chunks) where a rule names none
_FIELDS = {"dtype", "emb", "max_emb", "max_rows", "programs", *KINDS}


def tuning_rules() -> list[dict]:
    """The rules in force: RAMAC_IQN_TUNING's file (a JSON list of rules, or {"rules": [...]})
    ahead of DEFAULT_RULES. A file that cannot be read or holds a malformed rule is an error
    naming the file: a tuning asked for is never silently dropped."""
    path = os.environ.get("RAMAC_IQN_TUNING", "")
    if not path:
        return list(DEFAULT_RULES)
    key = (path, os.path.getmtime(path) if os.path.exists(path) else None)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = _read_rules(path)
    return _LOADED[key] + list(DEFAULT_RULES)


_LOADED: dict = {}


def _is_pow2(v) -> bool:
    return isinstance(v, int) and v > 0 and v & (v - 1) == 0


def _read_rules(path: str) -> list[dict]:
    import json

    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"RAMAC_IQN_TUNING={path}: cannot read the tuning rules ({e})") from None
    rules = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(rules, list):
        raise ValueError(f"RAMAC_IQN_TUNING={path}: expected a list of rules or {{\"rules\": [...]}}")
    for i, r in enumerate(rules):
        bad = (not isinstance(r, dict) or set(r) - _FIELDS
               or any(not (isinstance(r.get(k), list) and len(r[k]) == 4 and all(isinstance(v, int) and v > 0
                                                                                  for v in r[k]))
                      for k in KINDS if k in r)
               or any(k in r and r[k] is not None and not (isinstance(r[k], int) and r[k] > 0)
                      for k in ("emb", "max_emb", "max_rows", "programs"))
               or r.get("dtype", "float32") not in ("float32", "bfloat16")  # a typo would never match
               or any(not _is_pow2(v) for k in KINDS if k in r for v in r[k][:3])  # tile sizes and warps
               or any(r[k][0] < MIN_DOT_ROWS for k in KINDS if k in r)
               or any(k in r and not _is_pow2(r[k]) for k in ("emb", "max_emb")))
        if bad:
            raise ValueError(f"RAMAC_IQN_TUNING={path}: rule {i} is malformed ({r!r}); a rule takes "
                             f"{sorted(_FIELDS)}, each kernel kind as [block_m >= {MIN_DOT_ROWS}, block_n, warps, "
                             f"stages]")
    return rules


def launch_configs(dtype: torch.dtype, e_p: int, rows: int) -> tuple[dict, int]:
    """({kind: (block_m, block_n, warps, stages)}, backward programs) for a problem of `rows` rows
    (C x B x K) in `dtype` with embedding width e_p (a power of two): each kind from the first rule
    that matches and names it, the programs from the rule that gives "rows" (else PROGRAMS)."""
    name = str(dtype).replace("torch.", "")
    got, programs = {}, None
    for r in tuning_rules():
        if (r.get("dtype", name) != name or r.get("emb", e_p) != e_p or e_p > (r.get("max_emb") or e_p)
                or rows > (r.get("max_rows") or rows)):
            continue
        if "rows" in r and "rows" not in got:  # programs were timed with the backward's blocks
            programs = r.get("programs")
        for kind in KINDS:
            if kind in r and kind not in got:
                got[kind] = tuple(r[kind])
        if len(got) == len(KINDS):
            return got, programs or PROGRAMS
    raise ValueError(f"no IQN launch rule covers {name} at emb {e_p}")
