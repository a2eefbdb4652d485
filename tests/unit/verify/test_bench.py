"""verify bench bert: options, validation messages, OOM halving, the summary text."""

import argparse
import os

import pytest
import torch

from verify import affinity, bench


def parse(*argv):
    p = argparse.ArgumentParser()
    bench.add_bench_arguments(p)
    return p.parse_args(list(argv))


def test_defaults_are_the_gpu_bound_setting():
    cfg = bench.config_from_args(parse())
    assert (cfg.size, cfg.seq, cfg.batch, cfg.precision, cfg.repeats, cfg.compile) == (
        "base",
        128,
        256,
        "bf16",
        3,
        False,
    )
    assert cfg.fit_memory and cfg.pin_cpu and cfg.validate() == []


def test_help_says_which_settings_are_judged(capsys):
    p = argparse.ArgumentParser(prog="verify bench bert")
    bench.add_bench_arguments(p)
    p.print_help()
    out = " ".join(capsys.readouterr().out.split())
    assert "GPU-bound" in out and "launch-bound" in out and "never judged" in out and "--no-fit" in out


def test_options_reach_the_config():
    cfg = bench.config_from_args(
        parse(
            "--size",
            "large",
            "--seq",
            "512",
            "--batch",
            "16",
            "--precision",
            "tf32",
            "--steps",
            "5",
            "--repeats",
            "4",
            "--compile",
            "--no-peak",
            "--no-pin",
            "--no-fit",
        )
    )
    assert (cfg.size, cfg.seq, cfg.batch, cfg.precision, cfg.steps, cfg.repeats) == (
        "large",
        512,
        16,
        "tf32",
        5,
        4,
    )
    assert cfg.compile and not cfg.measure_peak and not cfg.pin_cpu and not cfg.fit_memory


def test_unknown_size_is_an_argparse_error():
    with pytest.raises(SystemExit) as exc:
        parse("--size", "huge")
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seq", 513, "--seq 513 is out of range; BERT takes 1..512 tokens"),
        ("batch", 0, "--batch 0 must be at least 1"),
        ("repeats", -2, "--repeats -2 must be at least 1"),
        ("warmup", 0, "--warmup 0 must be at least 1 (the first step includes set-up)"),
        ("precision", "int8", "--precision 'int8' is unknown; use one of bf16, fp16, fp32, tf32"),
    ],
)
def test_validation_names_option_value_and_fix(field, value, message):
    cfg = bench.BenchConfig(**{field: value})
    assert cfg.validate() == [message]


def test_run_bench_returns_2_for_bad_values(capsys):
    assert bench.run_bench(parse("--seq", "9999", "--batch", "0")) == 2
    err = capsys.readouterr().err
    assert "error: --seq 9999 is out of range" in err and "error: --batch 0 must be at least 1" in err


def test_oom_halves_until_it_fits_and_says_so():
    seen = []

    def fn(batch):
        seen.append(batch)
        if batch > 12:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch * 10

    result, batch, notes = bench.halve_on_oom(fn, 64, bench._is_oom)
    assert (result, batch, seen) == (80, 8, [64, 32, 16, 8])
    assert notes == [
        "batch 64 ran out of memory; halved to 32",
        "batch 32 ran out of memory; halved to 16",
        "batch 16 ran out of memory; halved to 8",
    ]


def test_oom_at_batch_1_and_other_errors_propagate():
    def oom(_batch):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        bench.halve_on_oom(oom, 2, bench._is_oom)

    def broken(_batch):
        raise RuntimeError("not an OOM")

    with pytest.raises(RuntimeError, match="not an OOM"):
        bench.halve_on_oom(broken, 64, bench._is_oom)


def test_batches_rotate_and_mask_about_15_percent():
    cfg = bench.BenchConfig(size="tiny", seq=64, batch=32)
    batches = bench.make_batches(cfg, 32, 1000, torch.device("cpu"))
    assert len(batches) == bench.N_BATCHES
    assert not torch.equal(batches[0][0], batches[1][0])
    masked = (batches[0][1] != -100).float().mean().item()
    assert 0.10 < masked < 0.20
    ids, labels = batches[0]
    keep = labels != -100
    assert torch.equal(labels[keep], ids[keep])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs at least 2 allowed CPUs to pin to one")
def test_pin_to_one_cpu_and_restore(tmp_path):
    before = os.sched_getaffinity(0)
    try:
        pinned = bench.pin_to_one_cpu(None, tmp_path)  # no bus id: the fallback rule, and it says why
        assert pinned.restore == before and os.sched_getaffinity(0) == {pinned.choice.cpu}
        assert pinned.choice.cpu in before and "bus id is unknown" in pinned.choice.why
    finally:
        affinity.set_all_threads(before)
    assert os.sched_getaffinity(0) == before


# Peak memory measured on the lent H200 (docs/gpu-results.md, `verify bench bert`, max_memory_allocated):
# (size, seq, batch, precision, GiB). The compiled run used less than eager would; it is a lower bound.
MEASURED_PEAKS = [
    ("large", 512, 16, "bf16", 14.77),
    ("base", 128, 64, "tf32", 8.85),
    ("base", 128, 64, "bf16", 6.41),
]


@pytest.mark.parametrize(("size", "seq", "batch", "precision", "gib"), MEASURED_PEAKS)
def test_memory_estimate_covers_the_measured_peaks(size, seq, batch, precision, gib):
    est = bench.estimate_train_bytes(size, seq, batch, precision) / 2**30
    assert gib <= est <= 1.25 * gib


def test_params_count_is_bert_base():
    # BertForMaskedLM(bert-base) has 109.5 M parameters (transformers counts 109,514,298 with biases/norms)
    assert 109.0e6 < bench.params_count("base") < 110.0e6


def test_memory_estimate_matches_a_real_cpu_model():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(
        BertConfig(vocab_size=bench.VOCAB, max_position_embeddings=bench.MAX_SEQ, **bench.SIZES["tiny"])
    )
    real = sum(p.numel() for p in model.parameters())
    assert bench.params_count("tiny") == pytest.approx(real, rel=0.01)


def test_fit_batch_halves_until_the_estimate_fits():
    gib = 2**30
    need = lambda b: b * gib  # noqa: E731 - 1 GiB per sequence
    free = 100 * gib
    assert bench.fit_batch(64, free, need) == 64
    assert bench.fit_batch(256, free, need) == 64  # 256 and 128 do not fit with the margin
    assert bench.fit_batch(256, 2 * gib, need) == 1
    assert bench.fit_batch(256, gib // 2, need) is None


def test_the_h200_setting_fits_the_h200_but_not_beside_130_gib_of_another_process():
    gib = 2**30

    def need(b):
        return bench.estimate_train_bytes("base", 128, b, "bf16")

    free_idle, free_held = 139.8 * gib, 150754820096 - 130 * gib - 0.6 * gib  # recorded total, 130 GiB held
    assert bench.fit_batch(256, free_idle, need) == 256
    assert bench.fit_batch(256, free_held, need) in (32, 64)
