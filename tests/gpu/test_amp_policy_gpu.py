"""amp on a real GPU: every entry of the CUDA autocast policy the check asserts is what CUDA autocast does,
for bf16 and fp16, with the ops written out here (not the check's own collector) and low-precision inputs
where type promotion could otherwise hide a missing cast.
The CPU half is tests/unit/verify/test_amp_policy.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from verify.checks import amp

pytestmark = pytest.mark.gpu


def observe(low: torch.dtype) -> dict[str, torch.dtype]:
    x = torch.randn(16, 64, device="cuda")
    w = torch.randn(64, 64, device="cuda")
    target = torch.randint(0, 64, (16,), device="cuda")
    with torch.autocast(device_type="cuda", dtype=low):
        a, b = F.linear(x, w), F.linear(x.flip(0), w)
        assert a.dtype == b.dtype == low, "autocast did not lower linear: the premise of this table"
        return {
            "linear": F.linear(x, w).dtype,
            "matmul": torch.matmul(x, w).dtype,
            "softmax": torch.softmax(a, dim=-1).dtype,
            "log_softmax": torch.log_softmax(a, dim=-1).dtype,
            "layer_norm": F.layer_norm(a, (64,)).dtype,
            "mse_loss": F.mse_loss(a, b).dtype,
            "cross_entropy": F.cross_entropy(a, target).dtype,
        }


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_every_cuda_policy_entry_is_what_real_cuda_autocast_does(low):
    if low == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16; the check runs only fp16 here")
    observed = observe(low)
    policy = amp.expected_policy("cuda")
    assert policy.keys() == observed.keys()
    want = {op: low if w == "low" else torch.float32 for op, w in policy.items()}
    assert observed == want
    assert amp._observed_dtypes(torch.device("cuda", 0), low) == observed
