"""amp: the "loss falls" rule on data. Falls = at least 2 losses, all finite, the last strictly below
LOSS_DROP (0.8) x the first. Real training runs that break it:
tests/integration/verify/test_amp_training.py.
"""

from __future__ import annotations

import math

import pytest

from verify.checks.amp import LOSS_DROP, RERUN_FIX, loss_problem


def test_a_falling_loss_passes():
    assert loss_problem([2.316, 1.62, 1.004, 0.2], "bf16") is None


def test_the_threshold_is_strict_and_meaningful():
    assert 0 < LOSS_DROP < 1
    assert loss_problem([2.0, 1.6], "bf16") == (
        "bf16 loss fell too little: 2 -> 1.6 over 2 steps (0.80x); "
        f"it must end below 0.8x the first; {RERUN_FIX}"
    )
    assert loss_problem([2.0, math.nextafter(1.6, 0)], "bf16") is None


def test_a_flat_loss_fails():
    assert loss_problem([2.316] * 30, "bf16") == (
        f"bf16 loss did not change: 2.316 at every step of 30; it must end below 0.8x the first; {RERUN_FIX}"
    )


def test_a_loss_that_returns_to_its_start_fails():
    assert loss_problem([2.0, 0.5, 2.0], "fp16").startswith(
        "fp16 loss ended where it started: 2 -> 2 over 3 steps;"
    )


def test_a_rising_loss_fails():
    assert loss_problem([2.316, 2.9e9, 1105.7], "bf16").startswith(
        "bf16 loss rose: 2.316 -> 1106 over 3 steps;"
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_fails_even_if_the_last_is_low(bad):
    problem = loss_problem([2.3, bad, 0.1], "bf16")
    assert problem == f"bf16 loss became {bad} at step 2 of 3 (first 2.3); {RERUN_FIX}"


@pytest.mark.parametrize("losses", [[], [2.3]])
def test_too_few_losses_fail(losses):
    assert loss_problem(losses, "bf16") == (
        f"bf16 training recorded {len(losses)} loss(es); a falling loss needs at least 2"
    )


@pytest.mark.parametrize("first", [0.0, -1.0])
def test_a_start_at_or_below_zero_fails(first):
    assert loss_problem([first, -5.0], "bf16").startswith(f"bf16 first loss is {first:.4g};")


@pytest.mark.parametrize("drop", [0, 1, 1.5])
def test_a_threshold_that_would_mean_nothing_is_refused(drop):
    with pytest.raises(ValueError, match="drop must be in"):
        loss_problem([2.0, 1.0], "bf16", drop=drop)
