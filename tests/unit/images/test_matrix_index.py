"""The matrix's package pins against the real index: each release exists with a wheel for the line's
Python on linux x86_64, admits that Python, and agrees with torch and the other pins of its line."""

from __future__ import annotations

import dataclasses

import pytest

from images.matrix import load_matrix
from images.packages import package_problems
from images.wheelindex import WheelIndex

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def index() -> WheelIndex:
    return WheelIndex()


@pytest.mark.parametrize("tag", load_matrix().tags)
def test_every_package_pin_installs_with_its_line(index: WheelIndex, tag: str) -> None:
    assert package_problems(index, load_matrix().get(tag)) == []


def test_the_torch_release_has_a_wheel_for_the_line_python(index: WheelIndex) -> None:
    for line in load_matrix().lines:
        wheel = index.find_wheel("torch", line.torch, line.python)
        assert wheel.filename == line.pins.wheel
        assert wheel.sha256 == line.pins.sha256


def test_conflicting_pins_are_reported(index: WheelIndex) -> None:
    lines = load_matrix().lines
    old, new = lines[0], lines[-1]
    # The oldest line's transformers with the newest line's tokenizers, and a release that does not exist.
    bad = dataclasses.replace(
        old, packages={**old.packages, "tokenizers": new.packages["tokenizers"], "rich": "0.0.0"}
    )
    problems = package_problems(index, bad)
    assert any(
        p.startswith(f"{old.tag}: packages.transformers:") and f"tokenizers {new.packages['tokenizers']}" in p
        for p in problems
    ), problems
    assert any(p.startswith(f"{old.tag}: packages.rich: no rich 0.0.0 wheel") for p in problems), problems


def test_a_python_without_torch_wheels_is_named(index: WheelIndex) -> None:
    line = load_matrix().lines[0]
    with pytest.raises(Exception, match=r"no torch .* wheel for CPython 3\.99 \(tag cp399\)"):
        index.find_wheel("torch", line.torch, "3.99")
