"""``/api/v1/environments``: where endpoints run (shared, dedicated, isolated), the hardware
they offer and the data sensitivities they accept."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/environments", tags=["environments"])
