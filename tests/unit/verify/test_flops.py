"""The BERT FLOP formula: its weight count equals the real model's matmul weights, and its algebra holds."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from verify import flops

SHAPES = [
    {
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 1000,
    },
    {
        "num_hidden_layers": 3,
        "hidden_size": 96,
        "num_attention_heads": 4,
        "intermediate_size": 200,
        "vocab_size": 777,
    },
]


@pytest.mark.parametrize("shape", SHAPES)
def test_matmul_params_equal_the_models_linear_weights(shape):
    model = BertForMaskedLM(BertConfig(**shape))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops.matmul_params(flops.shape_of(model.config)) == linear


def test_training_is_three_forwards_with_the_attention_term():
    s = flops.BertShape(layers=12, hidden=768, intermediate=3072, vocab=30522)
    p = flops.matmul_params(s)
    forward_per_token = 2 * p + 4 * s.layers * 128 * s.hidden  # QK^T and AV: 2*s*h each
    assert flops.flops_per_token(s, 128) == 3 * forward_per_token
    assert flops.train_step_flops(s, 64, 128) == 64 * 128 * 3 * forward_per_token


def test_longer_sequences_cost_more_per_token():
    s = flops.BertShape(layers=2, hidden=64, intermediate=256, vocab=100)
    assert flops.flops_per_token(s, 512) > flops.flops_per_token(s, 128)


@pytest.mark.parametrize(("batch", "seq"), [(0, 128), (8, 0), (-1, 4)])
def test_nonpositive_sizes_are_rejected_with_the_values(batch, seq):
    with pytest.raises(ValueError, match=f"batch={batch} seq={seq}"):
        flops.train_step_flops(flops.BertShape(1, 8, 16, 10), batch, seq)
