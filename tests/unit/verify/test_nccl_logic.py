"""nccl: the nccl-tests bandwidth formulas and how a launch's outcome becomes problems."""

import pytest

from verify.checks.nccl import GLOO_RANKS, evaluate, gloo_ranks
from verify.cluster.distributed import (
    CollectiveConfig,
    LaunchOutcome,
    MiB,
    RankResult,
    algbw_gbps,
    busbw_factor,
    significant,
    size_label,
)


@pytest.mark.parametrize(("n", "factor"), [(1, 0.0), (2, 1.0), (4, 1.5), (8, 1.75)])
def test_busbw_factor_is_2_n_minus_1_over_n(n, factor):
    assert busbw_factor(n) == pytest.approx(factor)


def test_busbw_factor_rejects_zero_ranks():
    with pytest.raises(ValueError, match="nranks must be >= 1, got 0"):
        busbw_factor(0)


def test_algbw_is_bytes_over_seconds_in_1e9():
    # a 2xH200 nccl-tests figure: 1 GiB at busbw 326 GB/s -> n=2, algbw == busbw
    t = (1 << 30) / 326e9
    assert algbw_gbps(1 << 30, t) == pytest.approx(326.0)
    assert algbw_gbps(1 << 30, t) * busbw_factor(2) == pytest.approx(326.0)


def test_size_labels():
    assert [size_label(s) for s in (MiB, 4 * MiB, 1 << 30, 1000, 4096)] == [
        "1MiB",
        "4MiB",
        "1GiB",
        "1000B",
        "4KiB",
    ]


def test_nccl_sizes_span_1mib_to_1gib_and_quick_stops_at_64mib():
    full = CollectiveConfig.for_backend("nccl", quick=False)
    quick = CollectiveConfig.for_backend("nccl", quick=True)
    assert full.bw_bytes[0] == MiB and full.bw_bytes[-1] == 1 << 30
    assert quick.bw_bytes[-1] == 64 * MiB
    assert any(n % 2 for n in full.check_numels)  # an odd size catches off-by-one chunking


def _outcome(results, codes, timed_out=False):
    return LaunchOutcome(results, timed_out, codes, dict.fromkeys(codes, "boom\nlast line"), 1.0)


def test_clean_launch_has_no_problems():
    res = [RankResult(0, 2, "cpu", True), RankResult(1, 2, "cpu", True)]
    problems, rank0 = evaluate(_outcome(res, {0: 0, 1: 0}), 2, 10)
    assert problems == [] and rank0 is res[0]


def test_wrong_sums_and_crashes_and_hangs_are_named():
    res = [RankResult(0, 3, "cpu", False, wrong=["1000 floats: 3 wrong on rank 0"])]
    problems, _ = evaluate(_outcome(res, {0: 0, 1: 1, 2: None}, timed_out=False), 3, 10)
    assert "wrong sum: 1000 floats: 3 wrong on rank 0" in problems
    assert "rank 1 exited with 1: last line" in problems
    problems, _ = evaluate(_outcome(res, {0: -9, 1: -9, 2: -9}, timed_out=True), 3, 42)
    assert problems[0] == "all_reduce hung: killed the workers after 42s; ranks [1, 2] never finished"


def test_missing_rank0_is_a_problem():
    problems, rank0 = evaluate(_outcome([], {0: 0}), 1, 10)
    assert rank0 is None and problems == ["rank 0 wrote no result"]


def test_figures_keep_four_significant_digits_so_cpu_rates_keep_their_ratio():
    # 0.0123 GB/s at 2 decimals would be 0.01 and its busbw (x1.75) 0.02: a ratio of 2, not 1.75
    assert significant(0.012345) == 0.01235
    assert significant(326.123) == 326.1
    assert significant(0.012345 * 1.75) / significant(0.012345) == pytest.approx(1.75, rel=2e-3)


def test_gloo_ranks_default_and_choice():
    assert gloo_ranks({}) == GLOO_RANKS == 2
    assert gloo_ranks({"gloo_ranks": 8}) == 8


@pytest.mark.parametrize("bad", [1, 0, -4, 2.5, "4", True, None])
def test_gloo_ranks_rejects_what_cannot_run_a_collective(bad):
    problem = gloo_ranks({"gloo_ranks": bad})
    assert problem == f"gloo_ranks is {bad!r}; fix: give a whole number of processes >= 2 (default 2)"
