"""Loop detection: every call the gateway sends to an external server carries the hops it
has made, so a revision whose URL leads back to an endpoint it came through is refused (508)
instead of calling itself until the server runs out of file descriptors."""

from __future__ import annotations

from dataclasses import dataclass

from modelport.core.errors import LoopDetected

__all__ = ["HOPS_HEADER", "MAX_HOPS", "Hops"]

HOPS_HEADER = b"x-modelport-hops"
MAX_HOPS = 8  # gateways in a chain; deeper is a loop through several of them


@dataclass(frozen=True, slots=True)
class Hops:
    """``gateway-id/endpoint`` entries a call passed through, oldest first."""

    entries: tuple[bytes, ...] = ()

    @classmethod
    def parse(cls, value: bytes) -> Hops:
        entries = [entry.strip() for entry in value.split(b",", MAX_HOPS + 1)]
        return cls(tuple(entry for entry in entries if entry))

    def arrive(self, gateway_id: str, endpoint: str) -> None:
        """Refuse a call that already passed through ``endpoint`` of this gateway."""
        token = f"{gateway_id}/{endpoint}".encode()
        if token in self.entries or len(self.entries) >= MAX_HOPS:
            raise LoopDetected(
                f"endpoint '{endpoint}' called itself: a revision's external URL leads back "
                f"to this gateway ({len(self.entries)} hops); point it at the real server",
                param="model",
            )

    def through(self, gateway_id: str, endpoint: str) -> bytes:
        """The header value for a call leaving ``endpoint`` of this gateway."""
        return b",".join((*self.entries, f"{gateway_id}/{endpoint}".encode()))
