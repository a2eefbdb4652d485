"""amp: the autocast policy we assert matches what this torch does on the CPU (bf16)."""

import torch

from verify.checks import amp


def test_cpu_policy_is_what_cpu_autocast_does():
    observed = amp._observed_dtypes(torch.device("cpu"), torch.bfloat16)
    for op, want in amp.expected_policy("cpu").items():
        assert observed[op] == (torch.bfloat16 if want == "low" else torch.float32), op


def test_cuda_policy_adds_the_float32_ops():
    cuda = amp.expected_policy("cuda")
    assert {cuda[k] for k in ("softmax", "log_softmax", "layer_norm", "mse_loss", "cross_entropy")} == {
        "float32"
    }
    assert cuda["linear"] == cuda["matmul"] == "low"


def test_tolerances_are_stated():
    assert amp.TOLERANCE == {"bf16": 1e-2, "fp16": 5e-3}
