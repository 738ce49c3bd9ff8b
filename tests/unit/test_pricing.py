"""Price arithmetic: exact amounts, versioned lookup, rounding once, allocation that sums."""

from __future__ import annotations

import threading
from fractions import Fraction

import pytest

from modelport.core.usage import Units, UsageRecord
from modelport.observability.pricing import (
    US_PER_HOUR,
    Price,
    PriceBook,
    allocate,
    format_usd,
    hour_pieces,
    parse_usd,
    replica_cost,
    round_nano,
)

H = 3600.0


def _record(at: float, **units: float) -> UsageRecord:
    return UsageRecord(
        request_id="r",
        endpoint="bc",
        revision="r1",
        key_id="k",
        project="p",
        customer="",
        status=200,
        latency_ms=1.0,
        units=Units(**units),  # type: ignore[arg-type]
        at=at,
        model="breast-cancer",
        model_version=3,
    )


@pytest.mark.parametrize(
    ("text", "nano"),
    [
        ("0", 0),
        ("0.002", 2_000_000),
        ("1", 10**9),
        ("0.000000001", 1),
        (" 12.5 ", 12_500_000_000),
        ("0.0020000000000", 2_000_000),  # trailing zeros are not precision
        ("2.5e-8", 25),
        ("0E+999999999", 0),
        ("1000000000", 10**18),
    ],
)
def test_parse_usd_is_exact(text: str, nano: int) -> None:
    assert parse_usd(text) == nano


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-0.01", "negative"),
        ("0.0000000001", "9 decimal places"),
        ("abc", "decimal number"),
        ("", "decimal string"),
        ("NaN", "finite"),
        ("Infinity", "finite"),
        ("1e30", "too large"),
        ("1e999999999", "too large"),  # no Decimal overflow: refused before any arithmetic
        ("1e-999999999", "9 decimal places"),  # not rounded to 0
        ("1.0000000000000000000000000000001", "9 decimal places"),  # not rounded to 1
    ],
)
def test_parse_usd_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_usd(text)


def test_format_usd_round_trips() -> None:
    for nano in (0, 1, 999_999_999, 1_000_000_000, 123_456_789_012):
        assert parse_usd(format_usd(nano)) == nano
    assert format_usd(1_500_000_000) == "1.500000000"
    assert format_usd(-1) == "-0.000000001"


def test_round_nano_is_half_even() -> None:
    assert [round_nano(Fraction(n, 2)) for n in (1, 3, 5, -1)] == [0, 2, 2, 0]
    assert round_nano(Fraction(7, 3)) == 2


def test_the_price_in_force_is_the_newest_started() -> None:
    book = PriceBook(
        [
            Price("hardware", "gpu", "per_hour", 3, 200.0),
            Price("hardware", "gpu", "per_hour", 1, 0.0),
            Price("hardware", "gpu", "per_hour", 2, 100.0),
        ]
    )
    at = [book.price_at("hardware", "gpu", "per_hour", t) for t in (-1, 0, 99.9, 100, 150, 1e9)]
    assert at == [None, 1, 1, 2, 2, 3]
    assert book.price_at("hardware", "cpu", "per_hour", 150) is None


def test_two_prices_from_one_instant_the_later_given_wins() -> None:
    book = PriceBook(
        [Price("endpoint", "bc", "per_image", 1, 5.0), Price("endpoint", "bc", "per_image", 2, 5.0)]
    )
    assert book.price_at("endpoint", "bc", "per_image", 5.0) == 2


def test_cost_of_an_event_uses_the_prices_of_its_time() -> None:
    book = PriceBook(
        [
            Price("model_version", "breast-cancer:3", "per_1k_rows", 2_000_000, 0.0),  # $0.002
            Price("model_version", "breast-cancer:3", "per_1k_rows", 4_000_000, 10 * H),
        ]
    )
    assert book.cost_of(_record(5 * H, rows=3)) == 6_000  # 3 rows x $0.002 / 1000
    assert book.cost_of(_record(11 * H, rows=3)) == 12_000
    assert book.cost_of(_record(-1, rows=3)) == 0  # before any price: free


def test_endpoint_prices_win_unit_by_unit() -> None:
    book = PriceBook(
        [
            Price("model_version", "breast-cancer:3", "per_1k_rows", 2_000_000, 0.0),
            Price("model_version", "breast-cancer:3", "per_1k_requests", 1_000_000, 0.0),
            Price("endpoint", "bc", "per_1k_rows", 0, 0.0),  # this endpoint's rows are free
        ]
    )
    # The endpoint's price of rows (0) wins; requests still cost the model version's price.
    assert book.cost_of(_record(1.0, rows=1000, requests=1)) == 1_000


def test_cost_is_rounded_once_half_even() -> None:
    # 1 token at $0.0000015 per 1K = 1.5 nano-USD: one event rounds to 2, the sum of both
    # units (1.5 + 1.5 = 3) is rounded once, not 2 + 2.
    book = PriceBook(
        [
            Price("endpoint", "bc", "per_1k_input_tokens", 1_500, 0.0),
            Price("endpoint", "bc", "per_1k_output_tokens", 1_500, 0.0),
        ]
    )
    assert book.cost_of(_record(1.0, input_tokens=1)) == 2
    assert book.cost_of(_record(1.0, input_tokens=1, output_tokens=1)) == 3
    book.replace([Price("endpoint", "bc", "per_1k_input_tokens", 2_500, 0.0)])
    assert book.cost_of(_record(1.0, input_tokens=1)) == 2  # 2.5 -> 2 (half to even)


def test_audio_seconds_are_priced_at_their_decimal_value() -> None:
    # 0.1 s is not exactly 0.1 as a float; priced as 0.1 it costs exactly 1/600 of a minute.
    book = PriceBook([Price("endpoint", "bc", "per_audio_minute", 6_000_000_000, 0.0)])
    assert book.cost_of(_record(1.0, audio_seconds=0.1)) == 10_000_000  # $6/min x 0.1 s
    assert book.cost_of(_record(1.0, audio_seconds=90.0)) == 9_000_000_000


def test_every_unit_is_priced() -> None:
    prices = {
        "per_1k_requests": 1_000_000,
        "per_1k_input_tokens": 1_000_000,
        "per_1k_output_tokens": 2_000_000,
        "per_audio_minute": 60_000,
        "per_image": 7,
        "per_1k_rows": 3_000,
    }
    book = PriceBook(Price("endpoint", "bc", u, n, 0.0) for u, n in prices.items())
    record = _record(
        1.0, requests=1, input_tokens=10, output_tokens=20, audio_seconds=2.0, images=3, rows=4
    )
    assert book.cost_of(record) == 1_000 + 10_000 + 40_000 + 2_000 + 21 + 12


def test_replace_is_atomic_for_readers() -> None:
    old = [Price("endpoint", "bc", "per_1k_rows", 1_000, 0.0)]
    new = [Price("endpoint", "bc", "per_1k_rows", 2_000, 0.0)]
    book = PriceBook(old)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(book.cost_of(_record(1.0, rows=1000)))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(2000):
        book.replace(new if i % 2 else old)
    stop.set()
    reader.join()
    assert seen <= {1_000, 2_000}


def test_hour_pieces_cut_at_hours_and_price_changes() -> None:
    h = US_PER_HOUR
    changes = [(h // 2, 10), (2 * h + 60, 20)]
    pieces = list(hour_pieces(h // 4, 2 * h + 120, changes))
    assert pieces == [
        (0, h // 4, None),
        (0, h // 2, 10),
        (h, h, 10),
        (2 * h, 60, 10),
        (2 * h, 60, 20),
    ]
    assert sum(p[1] for p in pieces) == 2 * h + 120 - h // 4


def test_replica_cost() -> None:
    assert replica_cost(1_000_000_000, US_PER_HOUR) == 1_000_000_000
    assert replica_cost(1_000_000_000, US_PER_HOUR // 4) == 250_000_000
    assert replica_cost(1, US_PER_HOUR // 2) == 0  # 0.5 nano-USD: half to even


@pytest.mark.parametrize(
    ("total", "weights"),
    [
        (100, [1, 1, 1]),
        (10, [0, 5, 5]),
        (1, [1, 1]),
        (999_999_999, [3, 7, 11, 13, 17]),
        (0, [4, 2]),
        (7, [1]),
        (12_345, [10**12, 1, 1]),
    ],
)
def test_allocate_sums_exactly(total: int, weights: list[int]) -> None:
    parts = allocate(total, weights)
    assert sum(parts) == total
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, sum(weights))
        assert abs(part - exact) < 1  # never more than one unit off its exact share


def test_allocate_gives_the_rest_to_the_largest_remainders() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]  # ties: the earlier weight
    assert allocate(10, [1, 2, 7]) == [1, 2, 7]
    assert allocate(5, [1, 3]) == [1, 4]  # 1.25 / 3.75: the .75 gets the rest


def test_allocate_refuses_no_weight() -> None:
    with pytest.raises(ValueError, match="not all zero"):
        allocate(5, [0, 0])


def test_integer_rounding_matches_exact_fractions() -> None:
    import random

    rng = random.Random(9)
    for _ in range(5000):
        price, us = rng.randrange(0, 10**12), rng.randrange(0, 10 * US_PER_HOUR)
        assert replica_cost(price, us) == round(Fraction(price * us, US_PER_HOUR))
    for numerator in range(-20, 20):
        assert round_nano(Fraction(numerator, 4)) == round(Fraction(numerator, 4))
