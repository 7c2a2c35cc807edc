"""Where an answer waits for its caller: in memory within the budget, else refused (a replay)
or on disk (a fresh answer, whose workflow ran)."""

from __future__ import annotations

import pytest

from app.errors import GatewayBusy
from app.memory import ByteBudget
from app.sending import held_body


async def test_an_answer_that_fits_is_held_in_memory_and_counted() -> None:
    budget = ByteBudget(limit=100)
    holding = budget.holding()
    held = await held_body(b"x" * 60, holding=holding, refusable=True)
    assert held == b"x" * 60
    assert budget.used == 60
    holding.release()
    assert budget.used == 0


async def test_a_replay_that_does_not_fit_is_refused() -> None:
    budget = ByteBudget(limit=100)
    budget.holding().take(60)
    with pytest.raises(GatewayBusy):
        await held_body(b"x" * 60, holding=budget.holding(), refusable=True)
    assert budget.used == 60


async def test_a_fresh_answer_that_does_not_fit_waits_on_disk_uncounted() -> None:
    budget = ByteBudget(limit=100)
    budget.holding().take(60)
    held = await held_body(b"x" * 60, holding=budget.holding(), refusable=False)
    assert not isinstance(held, bytes)
    with held:
        assert held.read() == b"x" * 60
    assert budget.used == 60
