"""The authentication-failure throttle: a sliding minute per address, bounded memory."""

from __future__ import annotations

import logging

import pytest

from modelport.core.errors import TooManyRequests
from modelport.governance.auth_failures import AuthFailureThrottle


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refuses_after_limit_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    throttle = AuthFailureThrottle(3, clock=clock)
    for _ in range(2):
        throttle.check("10.0.0.1")
        throttle.failed("10.0.0.1")
    throttle.check("10.0.0.1")  # two failures: still admitted
    with caplog.at_level(logging.WARNING, logger="modelport.auth"):
        throttle.failed("10.0.0.1")
        throttle.failed("10.0.0.1")  # same episode: logged once
    assert len([r for r in caplog.records if "10.0.0.1" in r.getMessage()]) == 1
    with pytest.raises(TooManyRequests) as info:
        throttle.check("10.0.0.1")
    assert info.value.status == 429
    assert dict(info.value.headers)[b"retry-after"] == b"60"
    throttle.check("10.0.0.2")  # another address is not affected
    clock.now += 61
    throttle.check("10.0.0.1")


def test_sliding_window_retry_after_counts_from_oldest_failure() -> None:
    clock = _Clock()
    throttle = AuthFailureThrottle(2, clock=clock)
    throttle.failed("a")
    clock.now += 40
    throttle.failed("a")
    with pytest.raises(TooManyRequests) as info:
        throttle.check("a")
    assert dict(info.value.headers)[b"retry-after"] == b"20"
    clock.now += 21
    throttle.check("a")  # the first failure left the window


def test_memory_is_bounded() -> None:
    throttle = AuthFailureThrottle(5, max_addresses=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert throttle.tracked() == 100


def test_zero_disables() -> None:
    throttle = AuthFailureThrottle(0)
    for _ in range(50):
        throttle.failed("a")
    throttle.check("a")
    assert throttle.tracked() == 0


def test_on_throttled_called_once_per_episode() -> None:
    clock = _Clock()
    seen: list[str] = []
    throttle = AuthFailureThrottle(2, clock=clock, on_throttled=seen.append)
    for _ in range(5):
        throttle.failed("a")
    assert seen == ["a"]
    clock.now += 61
    with pytest.raises(TooManyRequests):
        throttle.failed("a")
        throttle.failed("a")
        throttle.check("a")
    assert seen == ["a", "a"]
