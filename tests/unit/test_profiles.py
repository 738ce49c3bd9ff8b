"""Measured sizing: capacity and p95 interpolated from a bench profile, honest beyond it."""

from __future__ import annotations

import pytest

from modelport.planning.profiles import Profile, ProfilePoint, capacity, predict_p95


def _profile(*points: tuple[int, float, float], errors: int = 0) -> Profile:
    return Profile(
        "cpu",
        tuple(ProfilePoint(c, rps, p95 * 0.6, p95, p95 * 1.2, errors) for c, rps, p95 in points),
        {"cpu": "test"},
    )


# A replica that does 100 rps alone at 10 ms, 180 rps at 2 in flight, then saturates.
CURVE = _profile((1, 100.0, 10.0), (2, 180.0, 12.0), (4, 250.0, 18.0), (8, 260.0, 35.0))


def test_capacity_is_the_highest_rps_within_the_target() -> None:
    assert capacity(CURVE, 12.0) == pytest.approx(180.0)
    assert capacity(CURVE, 100.0) == pytest.approx(260.0)
    assert capacity(CURVE, None) == pytest.approx(260.0)


def test_capacity_interpolates_where_the_target_is_crossed() -> None:
    # Half way between 12 ms (180 rps) and 18 ms (250 rps).
    assert capacity(CURVE, 15.0) == pytest.approx(215.0)


def test_capacity_is_zero_when_even_one_request_misses_the_target() -> None:
    assert capacity(CURVE, 5.0) == 0.0
    assert capacity(Profile("cpu", (), {}), None) == 0.0


def test_predict_p95_interpolates_and_is_monotone() -> None:
    assert predict_p95(CURVE, 140.0) == pytest.approx(11.0)
    assert predict_p95(CURVE, 50.0) == pytest.approx(10.0)  # below the lightest: no faster
    assert predict_p95(CURVE, 0.0) == pytest.approx(10.0)
    previous = 0.0
    for rps in range(0, 261, 5):
        p95 = predict_p95(CURVE, float(rps))
        assert p95 is not None and p95 >= previous
        previous = p95


def test_predict_p95_is_none_beyond_what_was_measured() -> None:
    assert predict_p95(CURVE, 260.0) == pytest.approx(35.0)
    assert predict_p95(CURVE, 261.0) is None
    assert predict_p95(Profile("cpu", (), {}), 1.0) is None


def test_capacity_and_prediction_agree() -> None:
    """Loading a replica at its capacity for a target predicts a p95 within the target."""
    for target in (10.0, 11.0, 15.0, 20.0, 35.0):
        cap = capacity(CURVE, target)
        p95 = predict_p95(CURVE, cap)
        assert p95 is not None and p95 <= target + 1e-9


def test_noise_never_promises_more_than_measured() -> None:
    """A short run where p95 dipped at higher load, or where more concurrency gave no more
    throughput, must not make a higher load look faster."""
    noisy = _profile((1, 100.0, 10.0), (2, 180.0, 9.0), (4, 170.0, 30.0), (8, 250.0, 20.0))
    assert predict_p95(noisy, 180.0) == pytest.approx(10.0)  # the dip is flattened
    assert predict_p95(noisy, 250.0) == pytest.approx(20.0)
    assert capacity(noisy, 10.0) == pytest.approx(180.0)


def test_points_with_errors_do_not_count() -> None:
    failing = Profile(
        "cpu",
        (ProfilePoint(1, 100.0, 5, 10.0, 12, 0), ProfilePoint(4, 300.0, 5, 11.0, 12, 3)),
        {},
    )
    assert capacity(failing, None) == pytest.approx(100.0)
    assert predict_p95(failing, 200.0) is None


def test_points_may_come_in_any_order() -> None:
    shuffled = Profile("cpu", tuple(reversed(CURVE.points)), {})
    assert capacity(shuffled, 15.0) == pytest.approx(capacity(CURVE, 15.0))
