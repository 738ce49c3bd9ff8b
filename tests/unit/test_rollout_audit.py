"""Which automatic rollout move a tick made, from the run's position before and after it."""

from __future__ import annotations

import pytest

from modelport.control.rollout_audit import Position, move_of
from modelport.core.enums import RolloutState

PENDING, PROGRESSING, PAUSED = RolloutState.PENDING, RolloutState.PROGRESSING, RolloutState.PAUSED
ROLLED_BACK, ABORTED = RolloutState.ROLLED_BACK, RolloutState.ABORTED


def at(
    state: RolloutState, step: int = 0, tracked: bool = True, unsettled: bool = False
) -> Position:
    return Position(state, step, tracked, unsettled)


@pytest.mark.parametrize(
    ("before", "after", "move"),
    [
        (at(PENDING, -1), at(PENDING, -1), None),  # still starting
        (at(PENDING, -1), at(PROGRESSING, 0), "step"),  # ready: the first step
        (at(PROGRESSING, 0), at(PROGRESSING, 0), None),  # the window is still open
        (at(PROGRESSING, 0), at(PROGRESSING, 1), "step"),
        (at(PROGRESSING, 1), at(PROGRESSING, 1, tracked=False), "promote"),
        (at(PENDING, -1), at(PENDING, -1, tracked=False), "promote"),  # immediate
        (at(PROGRESSING, 1), at(ROLLED_BACK, 1, tracked=False), "rollback"),
        (at(PENDING, -1), at(PENDING, -1, unsettled=True), "rollback"),  # write pending
        (at(PENDING, -1, unsettled=True), at(ROLLED_BACK, -1, tracked=False), None),
        (at(PROGRESSING, 2), at(PAUSED, 2), "pause"),  # shadow analysis, awaiting approval
        (at(PROGRESSING, 2), at(ABORTED, 2, tracked=False), "rollback"),
    ],
)
def test_move_of(before: Position, after: Position, move: str | None) -> None:
    assert move_of(before, after) == move
