"""``/api/v1/plan``, ``/api/v1/hardware`` and ``/api/v1/endpoints/{name}/bench|profiles``:
readiness before a deploy, and measured profiles to plan with."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["planning"])
