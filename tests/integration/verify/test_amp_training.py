"""amp's training rule for real on the CPU: the check's own training function, with the learning rate
turned so that the loss cannot fall (lr 0) or diverges (lr 100: finite but huge; lr 1e4: NaN).
Each run is 10 bf16 AdamW steps of the check's MLP (about 1-2 s on 2 cores)."""

from __future__ import annotations

import pytest
import torch

from verify.checks import amp

CPU = torch.device("cpu")
STEPS = 10


def test_the_default_learning_rate_makes_the_loss_fall():
    outcome = amp.check_precision(CPU, "bf16", steps=STEPS)
    assert outcome.problems == []
    assert outcome.figures["bf16_loss_last"] < amp.LOSS_DROP * outcome.figures["bf16_loss_first"]


def test_lr_zero_gives_a_flat_loss_and_fails():
    outcome = amp.check_precision(CPU, "bf16", steps=STEPS, lr=0.0)
    (problem,) = outcome.problems
    assert problem.startswith(f"bf16 loss did not change: 2.316 at every step of {STEPS};"), problem
    assert "fix: rerun `verify run --only amp`" in problem


def test_a_huge_learning_rate_diverges_and_fails():
    outcome = amp.check_precision(CPU, "bf16", steps=STEPS, lr=100.0)
    (problem,) = outcome.problems
    assert problem.startswith("bf16 loss rose: 2.316 -> "), problem
    assert outcome.figures["bf16_loss_last"] > outcome.figures["bf16_loss_first"]


def test_a_learning_rate_that_overflows_gives_nan_and_fails():
    outcome = amp.check_precision(CPU, "bf16", steps=STEPS, lr=1e4)
    (problem,) = outcome.problems
    assert problem.startswith("bf16 loss became nan at step "), problem


@pytest.mark.parametrize("lr", [0.0, 100.0])
def test_train_is_the_pure_part_the_check_judges(lr):
    torch.manual_seed(0)
    model = amp._model(CPU)
    x = torch.randn(64, 256)
    y = torch.randint(0, 10, (64,))
    run = amp.train(model, x, y, "bf16", steps=3, lr=lr)
    assert len(run.losses) == 3 and run.grad_dtypes == {"torch.float32"} and run.grad_scale is None
    assert (amp.loss_problem(run.losses, "bf16") is None) is False
