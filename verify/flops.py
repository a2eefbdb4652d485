"""The FLOP count of one BERT masked-LM training step, from the config alone (testable without a GPU).

FORMULA (stated here and printed in the report):
    per token, forward  = 2 * P_matmul + 4 * L * s * h
    per token, training = 3 * forward = 6 * P_matmul + 12 * L * s * h
    per step            = batch * seq * (6 * P_matmul + 12 * L * s * h)
where
    P_matmul = L * (4 h^2 + 2 h i)   (Q, K, V, output projection; the two MLP matrices)
             + h^2 + h V             (the MLM head's transform and its decoder to the vocabulary,
                                      which runs on every position as HF's BertForMaskedLM does)
    L layers, h hidden size, i intermediate size, V vocabulary, s sequence length.
The "2" is one multiply and one add per weight per token; attention's Q.K^T and A.V are 2*s*h each per token
per layer; the backward pass costs twice the forward (grad w.r.t. inputs and w.r.t. weights), hence 3x.
Embedding lookups, biases, layer norms, softmax and the optimizer are left out (they are < 1 % here), as in
the usual "6 N D" accounting (Kaplan et al. 2020; Narayanan et al. 2021 for the attention term).
"""

from __future__ import annotations

from dataclasses import dataclass

FORMULA = "FLOP/step = batch*seq*(6*P_matmul + 12*L*seq*h); P_matmul = L*(4h^2+2hi) + h^2 + hV"


@dataclass(frozen=True)
class BertShape:
    layers: int
    hidden: int
    intermediate: int
    vocab: int


def matmul_params(shape: BertShape) -> int:
    """Weights that take part in a matrix product per token (see FORMULA)."""
    h, i = shape.hidden, shape.intermediate
    return shape.layers * (4 * h * h + 2 * h * i) + h * h + h * shape.vocab


def flops_per_token(shape: BertShape, seq: int) -> int:
    """Training FLOPs per token at sequence length seq."""
    return 6 * matmul_params(shape) + 12 * shape.layers * seq * shape.hidden


def train_step_flops(shape: BertShape, batch: int, seq: int) -> int:
    """Training FLOPs of one optimizer step over batch x seq tokens."""
    if batch <= 0 or seq <= 0:
        raise ValueError(f"batch and seq must be positive, got batch={batch} seq={seq}")
    return batch * seq * flops_per_token(shape, seq)


def shape_of(config: object) -> BertShape:
    """Read the shape from a transformers BertConfig (duck-typed to keep this module import-light)."""
    return BertShape(
        layers=int(config.num_hidden_layers),  # type: ignore[attr-defined]
        hidden=int(config.hidden_size),  # type: ignore[attr-defined]
        intermediate=int(config.intermediate_size),  # type: ignore[attr-defined]
        vocab=int(config.vocab_size),  # type: ignore[attr-defined]
    )
