"""The RDP accountant of local DP: epsilon grows with releases and shrinks with
noise; the noise multiplier found for a target meets it."""

import math

import pytest

from prunus.common.privacy import epsilon, noise_multiplier


@pytest.mark.parametrize("target", [0.5, 2.0, 8.0, 50.0])
@pytest.mark.parametrize("releases", [1, 5])
def test_the_noise_multiplier_meets_its_target(target, releases):
    sigma = noise_multiplier(target, 1e-5, releases)
    assert epsilon(sigma, releases, 1e-5) == pytest.approx(target, rel=1e-6)
    assert epsilon(sigma * 0.99, releases, 1e-5) > target


def test_epsilon_composes_and_noise_helps():
    assert epsilon(1.0, 1, 1e-5) < epsilon(1.0, 4, 1e-5) < 4 * epsilon(1.0, 1, 1e-5)
    assert epsilon(2.0, 4, 1e-5) < epsilon(1.0, 4, 1e-5)
    assert epsilon(1.0, 0, 1e-5) == 0.0


def test_one_release_is_no_worse_than_the_classic_gaussian_bound():
    """sigma = sqrt(2 ln(1.25 / delta)) / epsilon is (epsilon, delta)-DP for epsilon < 1
    (Dwork and Roth, Theorem A.1); the RDP accountant must certify at least as much."""
    for target in (0.3, 0.6, 0.9):
        classic = (2 * math.log(1.25 / 1e-5)) ** 0.5 / target
        assert epsilon(classic, 1, 1e-5) <= target * 1.05
