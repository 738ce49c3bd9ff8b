"""``/api/v1/compare``: candidates for an endpoint scored on an evaluation set, side by side."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["compare"])
