"""Price arithmetic: exact money, versioned price lookup, and cost allocation.

Money is an integer number of nano-USD (1e-9 USD) everywhere: prices, event costs, reports.
Nothing here touches a float on the way to an amount, with one documented exception: a usage
event's ``audio_seconds`` is a float, and is taken at its shortest decimal form (``repr``, as
the journal writes it) before it is multiplied. Each amount is computed as an exact fraction
and rounded ONCE to a whole nano-USD, half to even (banker's rounding: no drift up or down
over many events).

A price is in force from its ``effective_from`` on, until a newer one for the same target and
unit takes over: the price at time ``t`` is the one with the latest ``effective_from <= t``.
Nothing is ever closed or rewritten, so a report over last month uses last month's prices.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from types import MappingProxyType

from modelport.core.usage import Units, UsageRecord

__all__ = [
    "HARDWARE_UNIT",
    "NANO_PER_USD",
    "UNIT_PRICES",
    "US_PER_HOUR",
    "Price",
    "PriceBook",
    "allocate",
    "format_usd",
    "hour_pieces",
    "parse_usd",
    "replica_cost",
    "round_nano",
]

NANO_PER_USD = 1_000_000_000
US_PER_HOUR = 3_600_000_000  # microseconds
#: Each per-unit price: the usage field it prices and how many of that field it is the price
#: of (``per_1k_rows`` is the price of 1,000 rows; ``per_audio_minute`` of 60 audio seconds).
UNIT_PRICES: Mapping[str, tuple[str, int]] = MappingProxyType(
    {
        "per_1k_requests": ("requests", 1000),
        "per_1k_input_tokens": ("input_tokens", 1000),
        "per_1k_output_tokens": ("output_tokens", 1000),
        "per_audio_minute": ("audio_seconds", 60),
        "per_image": ("images", 1),
        "per_1k_rows": ("rows", 1000),
    }
)
#: A multiple of every unit's ``per``: whole quantities are priced over it in integers.
_COMMON_PER = math.lcm(*(per for _, per in UNIT_PRICES.values()))
#: The one unit a hardware type is priced in: one replica running for one hour.
HARDWARE_UNIT = "per_hour"
# Large enough for any real price (a billion dollars per unit), small enough that every sum
# of them over years of events fits a 64-bit BIGINT column.
_MAX_USD = 1_000_000_000


def parse_usd(text: str) -> int:
    """Nano-USD from a decimal string such as ``"0.002"``; exact or refused.

    Raises ``ValueError`` (with a message fit for a user) for anything that is not a plain,
    non-negative decimal with at most 9 digits after the point."""
    shown = repr(text)[:40]  # a user's string, echoed back: bounded
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f'must be a decimal string of USD such as "0.002", got {shown}')
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f'must be a decimal number of USD such as "0.002", got {shown}') from None
    if not value.is_finite():
        raise ValueError(f"must be a finite amount of USD, got {shown}")
    if value < 0:
        raise ValueError(f"must not be negative, got {shown}")
    if value == 0:
        return 0
    if value > _MAX_USD:
        raise ValueError(f"is too large (at most {_MAX_USD} USD), got {shown}")
    # From the digits, never through a Decimal context: that would round ("1e-999999999"
    # to 0, 33 significant digits to 28) where a price must be exact or refused.
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    kept = list(digits)
    while kept and kept[-1] == 0 and exponent < -9:  # 0.0020000000000 is still 0.002
        kept.pop()
        exponent += 1
    if exponent < -9:
        raise ValueError(f"has more than 9 decimal places (1 nano-USD is the unit), got {shown}")
    # A non-zero value of at most 1e9 has an exponent of at most 9: the power stays small.
    return int("".join(map(str, kept)) + "0" * (exponent + 9))


def format_usd(nano: int) -> str:
    """``1500000000`` -> ``"1.500000000"``: exact, nine decimals, so that sums add up."""
    sign = "-" if nano < 0 else ""
    whole, frac = divmod(abs(nano), NANO_PER_USD)
    return f"{sign}{whole}.{frac:09d}"


def round_nano(amount: Fraction) -> int:
    """An exact amount of nano-USD rounded to a whole one, half to even."""
    return _divide(amount.numerator, amount.denominator)


def _divide(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (denominator > 0) rounded half to even, in integers: what
    ``round(Fraction(...))`` gives, without building the fraction (reports do this a lot)."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


@dataclass(frozen=True, slots=True)
class Price:
    """One price: of ``unit`` for the endpoint, model version (``name:3``) or hardware type
    ``target``, in force from ``effective_from`` (unix seconds)."""

    kind: str  # "endpoint" | "model_version" | "hardware"
    target: str
    unit: str
    nanousd: int
    effective_from: float


_Key = tuple[str, str, str]  # kind, target, unit


@dataclass(frozen=True, slots=True)
class _History:
    """One (target, unit)'s prices, oldest first: parallel lists for ``bisect``."""

    starts: tuple[float, ...]
    amounts: tuple[int, ...]

    def at(self, t: float) -> int | None:
        i = bisect.bisect_right(self.starts, t)
        return self.amounts[i - 1] if i else None


def _histories(prices: Iterable[Price]) -> dict[_Key, _History]:
    grouped: dict[_Key, list[tuple[float, int, int]]] = {}
    for order, price in enumerate(prices):
        key = (price.kind, price.target, price.unit)
        # Two prices from the same instant: the one given later wins (sorted last).
        grouped.setdefault(key, []).append((price.effective_from, order, price.nanousd))
    histories = {}
    for key, entries in grouped.items():
        entries.sort()
        histories[key] = _History(tuple(e[0] for e in entries), tuple(e[2] for e in entries))
    return histories


def _by_target(histories: Mapping[_Key, _History]) -> dict[tuple[str, str], dict[str, _History]]:
    """The histories by ``(kind, target)``, then unit."""
    targets: dict[tuple[str, str], dict[str, _History]] = {}
    for (kind, target, unit), history in histories.items():
        targets.setdefault((kind, target), {})[unit] = history
    return targets


class PriceBook:
    """Every price, in memory, for pricing usage events as they are stored.

    The control plane calls :meth:`replace` with the whole catalog whenever a price is set;
    readers (the usage loader's thread, reports) see either the old or the new catalog,
    never half of one: the swap is one reference assignment under a lock."""

    def __init__(self, prices: Iterable[Price] = ()) -> None:
        self._lock = threading.Lock()
        self._histories = _histories(prices)
        self._targets = _by_target(self._histories)

    def replace(self, prices: Iterable[Price]) -> None:
        """Install a new catalog (all prices, every version of each)."""
        histories = _histories(prices)
        targets = _by_target(histories)
        with self._lock:
            # One reference: a reader takes ``_targets`` once per lookup (unit_prices).
            self._histories, self._targets = histories, targets

    def price_at(self, kind: str, target: str, unit: str, t: float) -> int | None:
        """The price in force at ``t`` (unix seconds), or None if none was yet."""
        history = self._histories.get((kind, target, unit))
        return history.at(t) if history is not None else None

    def unit_prices(self, endpoint: str, model_version: str, t: float) -> dict[str, int]:
        """Each priced unit at ``t``: the endpoint's price where it has one, else the model
        version's (precedence is per unit)."""
        targets = self._targets  # one snapshot for the whole lookup
        # Two lookups, not one per unit and target: budgets price on the gateway's hot path.
        own = targets.get(("endpoint", endpoint))
        version = targets.get(("model_version", model_version))
        prices: dict[str, int] = {}
        if own is None and version is None:
            return prices
        for unit in UNIT_PRICES:
            for histories in (own, version):
                history = histories.get(unit) if histories is not None else None
                amount = history.at(t) if history is not None else None
                if amount is not None:
                    prices[unit] = amount
                    break
        return prices

    def cost_of(self, record: UsageRecord) -> int:
        """What one usage event cost, in nano-USD, at the prices in force at its time."""
        return self.cost(
            record.endpoint, f"{record.model}:{record.model_version}", record.units, record.at
        )

    def cost(self, endpoint: str, model_version: str, units: Units, at: float) -> int:
        """What ``units`` of an endpoint's call cost, in nano-USD, at the prices in force at
        ``at``; ``model_version`` is ``name:N``.

        Budgets price every admitted call with it on the gateway's hot path (twice: the
        estimate and the settle), so whole quantities are summed in integers over a common
        denominator: the same exact amount, rounded once the same way, as the fractions the
        audio path below still uses (tests/unit/test_budgets.py compares them)."""
        prices = self.unit_prices(endpoint, model_version, at)
        if not prices:
            return 0
        numerator = 0
        for unit, amount in prices.items():
            field, per = UNIT_PRICES[unit]
            quantity = getattr(units, field)
            if field == "audio_seconds":
                if quantity:
                    return self.exact_cost(prices, units)
                continue
            numerator += quantity * amount * (_COMMON_PER // per)
        return _divide(numerator, _COMMON_PER)

    @staticmethod
    def exact_cost(prices: Mapping[str, int], units: Units) -> int:
        """``cost`` in fractions, for any quantity (audio seconds are not whole)."""
        total = Fraction(0)
        for unit, amount in prices.items():
            field, per = UNIT_PRICES[unit]
            quantity = getattr(units, field)
            if field == "audio_seconds":  # the float's shortest decimal, as journaled
                quantity = Fraction(Decimal(repr(float(quantity))))
            total += Fraction(quantity) * amount / per
        return round_nano(total)

    def hardware_changes(self, hardware: str) -> list[tuple[float, int]]:
        """``(effective_from, nano-USD per hour)`` of every price of a hardware type, oldest
        first."""
        history = self._histories.get(("hardware", hardware, HARDWARE_UNIT))
        if history is None:
            return []
        return list(zip(history.starts, history.amounts, strict=True))


def hour_pieces(
    start_us: int, end_us: int, changes: Sequence[tuple[int, int]]
) -> Iterator[tuple[int, int, int | None]]:
    """Cut ``[start_us, end_us)`` (microseconds since the epoch) at every hour boundary and
    every price change; yield ``(hour_start_us, microseconds, price)`` per piece, where
    ``changes`` is ``(effective_from_us, price)`` oldest first and ``price`` is None before
    the first."""
    starts = [c[0] for c in changes]
    t = start_us
    while t < end_us:
        hour = t - t % US_PER_HOUR
        i = bisect.bisect_right(starts, t)
        price = changes[i - 1][1] if i else None
        end = min(end_us, hour + US_PER_HOUR)
        if i < len(starts):
            end = min(end, starts[i])
        yield hour, end - t, price
        t = end


def replica_cost(nano_per_hour: int, microseconds: int) -> int:
    """What ``microseconds`` of replica time cost at an hourly price, rounded once."""
    return _divide(nano_per_hour * microseconds, US_PER_HOUR)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to non-negative integer ``weights`` so that the parts sum
    to exactly ``total``: each gets the floor of its share, and what is left goes one unit at
    a time to the largest remainders (ties to the earlier weight). Raises ``ValueError`` if
    the weights sum to zero."""
    whole = sum(weights)
    if whole <= 0 or any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative and not all zero")
    parts = []
    remainders = []
    for index, weight in enumerate(weights):
        part, remainder = divmod(total * weight, whole)
        parts.append(part)
        remainders.append((-remainder, index))
    for _, index in sorted(remainders)[: total - sum(parts)]:
        parts[index] += 1
    return parts
