"""``/api/v1/recommendations``: changes to an intent that traffic, latency and cost suggest."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["recommendations"])
