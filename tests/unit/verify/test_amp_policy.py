"""amp: the autocast policy the check asserts, against what autocast really does and torch's own op lists.

Three independent witnesses, so a wrong entry in expected_policy() fails here rather than in the field:
  1. real torch.autocast on this CPU, with ops written out in this file (not the check's own collector),
     each fed low-precision inputs where that matters, so type promotion cannot hide a missing cast;
  2. the op lists torch's own autocast tests use (torch/testing/_internal/autocast_test_lists.py, shipped in
     the wheel; read as source because importing it needs the `expecttest` test dependency);
  3. the check's collector (_observed_dtypes) must see what 1. sees, for every op, on both policies.
CUDA autocast cannot run here: tests/gpu/test_amp_policy_gpu.py does 1. on a GPU.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from verify.checks import amp

LOW = torch.bfloat16  # what the check runs on the CPU
TORCH_LISTS = Path(torch.__file__).parent / "testing" / "_internal" / "autocast_test_lists.py"
# Composite ops are not in autocast's lists; their output dtype is their last op's:
# cross_entropy = log_softmax then nll_loss.
COMPOSITE = {"cross_entropy": "nll_loss"}
ALL_OPS = {"linear", "matmul", "softmax", "log_softmax", "layer_norm", "mse_loss", "cross_entropy"}


def observe(device: str, low: torch.dtype) -> dict[str, torch.dtype]:
    """Each op's output dtype under autocast(device, low), written independently of the check."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 64, generator=gen).to(device)
    w = torch.randn(64, 64, generator=gen).to(device)
    target = torch.randint(0, 64, (16,), generator=gen).to(device)
    with torch.autocast(device_type=device, dtype=low):
        a, b = F.linear(x, w), F.linear(x.flip(0), w)  # low-precision activations (on every policy)
        assert a.dtype == b.dtype == low, "autocast did not lower linear: the premise of this table"
        return {
            "linear": F.linear(x, w).dtype,
            "matmul": torch.matmul(x, w).dtype,
            "softmax": torch.softmax(a, dim=-1).dtype,
            "log_softmax": torch.log_softmax(a, dim=-1).dtype,
            "layer_norm": F.layer_norm(a, (64,)).dtype,
            "mse_loss": F.mse_loss(a, b).dtype,  # both low: float32 only if autocast casts up
            "cross_entropy": F.cross_entropy(a, target).dtype,
        }


def dtype_for(want: str, low: torch.dtype) -> torch.dtype:
    return {"low": low, "float32": torch.float32}[want]


def torch_autocast_lists(device: str) -> tuple[set[str], set[str]]:
    """(ops autocast runs in low precision, ops it runs in float32) from torch's own autocast test lists."""
    cls, low_lists, fp32_lists = {
        "cuda": (
            "AutocastTestLists",
            {"torch_fp16", "nn_fp16", "methods_fp16", "linalg_fp16"},
            {"torch_fp32", "nn_fp32", "methods_fp32"},
        ),
        "cpu": ("AutocastCPUTestLists", {"torch_16", "nn_16"}, {"torch_fp32", "nn_fp32"}),
    }[device]
    tree = ast.parse(TORCH_LISTS.read_text())
    lists: dict[str, set[str]] = {}
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
    for assign in ast.walk(node):
        if not (isinstance(assign, ast.Assign) and isinstance(assign.value, ast.List)):
            continue
        (target,) = assign.targets
        if isinstance(target, ast.Attribute):
            lists[target.attr] = {
                e.elts[0].value
                for e in assign.value.elts
                if isinstance(e, ast.Tuple) and isinstance(e.elts[0], ast.Constant)
            }
    assert low_lists | fp32_lists <= lists.keys(), f"{TORCH_LISTS} no longer has {low_lists | fp32_lists}"
    return set().union(*(lists[k] for k in low_lists)), set().union(*(lists[k] for k in fp32_lists))


@pytest.fixture(scope="module")
def cpu_observed() -> dict[str, torch.dtype]:
    return observe("cpu", LOW)


def test_every_cpu_policy_entry_is_what_real_cpu_autocast_does(cpu_observed):
    policy = amp.expected_policy("cpu")
    assert policy, "an empty policy asserts nothing"
    wrong = {
        op: (str(cpu_observed[op]), want)
        for op, want in policy.items()
        if cpu_observed[op] != dtype_for(want, LOW)
    }
    assert wrong == {}


def test_the_ops_left_out_on_the_cpu_really_are_not_cast_there(cpu_observed):
    # The CUDA policy's extra ops keep their (low) input type on the CPU: asserting float32 there would
    # be a false FAIL, asserting them at all would pin an accident of today's torch.
    left_out = amp.expected_policy("cuda").keys() - amp.expected_policy("cpu").keys()
    assert left_out == {"softmax", "log_softmax", "layer_norm"}
    assert {op: cpu_observed[op] for op in left_out} == dict.fromkeys(left_out, LOW)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_policy_matches_torchs_own_autocast_op_lists(device):
    low_ops, fp32_ops = torch_autocast_lists(device)
    for op, want in amp.expected_policy(device).items():
        name = COMPOSITE.get(op, op)
        assert name in (low_ops if want == "low" else fp32_ops), (device, op, want)


def test_cpu_leaves_out_exactly_what_torchs_cpu_lists_do_not_cast():
    low_ops, fp32_ops = torch_autocast_lists("cpu")
    for op in amp.expected_policy("cuda").keys() - amp.expected_policy("cpu").keys():
        assert op not in low_ops | fp32_ops, op


def test_the_checks_collector_sees_what_autocast_does(cpu_observed):
    assert amp._observed_dtypes(torch.device("cpu"), LOW) == cpu_observed
    assert cpu_observed.keys() == ALL_OPS == amp.expected_policy("cuda").keys()


def test_a_wrong_policy_entry_is_reported_with_the_fix(cpu_observed):
    policy = amp.expected_policy("cpu")
    assert amp.policy_problems(cpu_observed, policy, LOW) == []
    flipped = {op: "float32" if want == "low" else "low" for op, want in policy.items()}
    problems = amp.policy_problems(cpu_observed, flipped, LOW)
    assert len(problems) == len(policy)
    assert problems[0] == (
        "linear gave torch.bfloat16 under bfloat16 autocast, policy says torch.float32; "
        "fix: use the image's own torch (`verify run --only env` compares it with the image's manifest)"
    )


def test_cuda_policy_adds_the_float32_ops():
    cuda = amp.expected_policy("cuda")
    assert {cuda[k] for k in ("softmax", "log_softmax", "layer_norm", "mse_loss", "cross_entropy")} == {
        "float32"
    }
    assert cuda["linear"] == cuda["matmul"] == "low"


def test_tolerances_are_stated():
    assert amp.TOLERANCE == {"bf16": 1e-2, "fp16": 5e-3}
