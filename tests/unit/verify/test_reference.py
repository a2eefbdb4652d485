"""Node health: the reference table and the 15 % rule."""

from types import SimpleNamespace

import pytest

from verify import reference, specs


def test_every_reference_names_a_spec_model_and_who_measured_it():
    models = {s.model for s in specs.SPECS}
    for ref in reference.REFERENCES:
        assert ref.model in models
        assert ref.measured_by_us == ref.source.startswith("measured by us")
        assert ref.measured_by_us or "not measured by us" in ref.source


def test_lookup_matches_the_whole_config():
    ref = reference.REFERENCES[0]
    assert reference.lookup(ref.model, ref.size, ref.seq, ref.batch, ref.precision, ref.compile) is ref
    assert reference.lookup(ref.model, ref.size, ref.seq, ref.batch + 1, ref.precision, ref.compile) is None


@pytest.mark.parametrize(("fraction", "warns"), [(1.2, False), (0.86, False), (0.85, False), (0.84, True)])
def test_warns_only_beyond_15_percent(fraction, warns):
    ref = reference.REFERENCES[0]
    msg = reference.deficit_message(fraction * ref.samples_per_s, ref)
    assert (msg is not None) is warns
    if warns:
        assert f"16% below the {ref.model} reference {ref.samples_per_s:g}" in msg
        assert "throttling" in msg and "PCIe" in msg and "clocks" in msg


def _result(name, sps, **overrides):
    config = {"size": "base", "seq": 128, "batch": 64, "precision": "bf16", "compile": False} | overrides
    return SimpleNamespace(device_name=name, samples_per_s=sps, config=config, oom_notes=[], pinned_cpu=3)


def test_assess_uses_the_gpu_model_and_skips_what_it_cannot_compare():
    h200 = reference.lookup("H200 SXM", "base", 128, 64, "bf16", False)
    assert reference.assess(_result("NVIDIA H200", 0.5 * h200.samples_per_s)) is not None
    assert reference.assess(_result("NVIDIA H200", h200.samples_per_s)) is None
    assert reference.assess(_result("NVIDIA H200", 1.0, batch=32)) is None  # no reference for that config
    assert reference.assess(_result("NVIDIA GeForce GTX 1080", 1.0)) is None  # not in the spec table
    halved = _result("NVIDIA H200", 1.0)
    halved.oom_notes = ["batch 64 ran out of memory; halved to 32"]
    assert reference.assess(halved) is None
    unpinned = _result("NVIDIA H200", 1.0)
    unpinned.pinned_cpu = None
    assert reference.assess(unpinned) is None
