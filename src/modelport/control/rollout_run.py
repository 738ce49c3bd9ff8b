"""A rollout in progress, as the controller tracks it between ticks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from modelport.core.enums import RolloutState
from modelport.store.tables import RolloutRow

__all__ = ["RolloutRun"]


@dataclass(slots=True)
class RolloutRun:
    """A rollout in progress, as the controller tracks it between ticks."""

    rollout_id: int
    endpoint: str
    source: str  # the stable revision's label
    target: str  # the new revision's label
    plan: dict[str, Any]
    state: RolloutState
    step: int
    mark: float = 0.0  # windows clock when the step began: its window starts here
    started: float = field(default_factory=time.monotonic)  # when the step (or warm-up) began
    # A rollback already done in traffic whose write failed: (state, event, message, data).
    unsettled: tuple[RolloutState, str, str, dict[str, Any]] | None = None

    @property
    def strategy(self) -> str:
        return str(self.plan["strategy"])

    @property
    def steps(self) -> list[int]:
        if self.strategy == "canary":
            return list(self.plan["steps"])
        return [100] if self.strategy == "blue-green" else [0]

    def weight(self, step: int | None = None) -> float:
        """The percent of traffic the new revision answers at ``step`` (the current one by
        default): none while it warms up, and none in a shadow rollout, which only mirrors."""
        step = self.step if step is None else step
        if self.strategy == "shadow" or step < 0:
            return 0.0
        return float(self.steps[step])

    @classmethod
    def of(cls, rollout: RolloutRow) -> RolloutRun:
        """The run of a stored rollout (read inside the rollout's session)."""
        return cls(
            rollout_id=rollout.id,
            endpoint=rollout.endpoint.name,
            source=f"r{rollout.from_revision}",
            target=f"r{rollout.to_revision}",
            plan=rollout.plan,
            state=RolloutState(rollout.state),
            step=rollout.step,
        )
