"""A restarted n8n is not flooded: forwards go one at a time until one is answered by n8n as
itself (a restarted n8n 2.40.7, flooded with requests for webhooks it had not yet registered,
registered none of them for minutes)."""

from __future__ import annotations

import asyncio
import time

from app.forwarding.readiness import Readiness


async def ready() -> bool:
    return True


async def test_after_an_outage_forwards_take_turns_until_n8n_answers_as_itself() -> None:
    async with Readiness(ready, poll_seconds=0.01, give_up_seconds=5) as readiness:
        readiness.saw_not_ready(outage=True)
        inside = 0
        most_inside = 0
        answered = asyncio.Event()

        async def forward(answers: bool) -> None:
            nonlocal inside, most_inside
            async with readiness.turn(time.monotonic() + 5):
                inside += 1
                most_inside = max(most_inside, inside)
                await asyncio.sleep(0.02)
                inside -= 1
            if answers:
                readiness.saw_answer(from_workflow=True)
                answered.set()

        scouts = [asyncio.create_task(forward(answers=False)) for _ in range(3)]
        await asyncio.gather(*scouts)
        assert most_inside == 1
        await forward(answers=True)
        await answered.wait()
        most_inside = 0
        await asyncio.gather(*(forward(answers=True) for _ in range(5)))
        assert most_inside == 5


async def test_a_forward_waits_its_turn_no_longer_than_its_deadline() -> None:
    async with Readiness(ready, poll_seconds=0.01, give_up_seconds=5) as readiness:
        readiness.saw_not_ready(outage=True)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def scout() -> None:
            async with readiness.turn(time.monotonic() + 5):
                holding.set()
                await release.wait()

        task = asyncio.create_task(scout())
        await holding.wait()
        started = time.monotonic()
        async with readiness.turn(time.monotonic() + 0.1):
            waited = time.monotonic() - started
        release.set()
        await task
        assert 0.05 < waited < 1.0


async def test_n8n_that_was_never_away_is_sent_to_at_once() -> None:
    async with Readiness(ready, poll_seconds=0.01, give_up_seconds=5) as readiness:
        readiness.saw_not_ready(outage=False)  # "not registered" alone: no turns
        inside = 0
        most_inside = 0

        async def forward() -> None:
            nonlocal inside, most_inside
            async with readiness.turn(time.monotonic() + 5):
                inside += 1
                most_inside = max(most_inside, inside)
                await asyncio.sleep(0.02)
                inside -= 1

        await asyncio.gather(*(forward() for _ in range(4)))
        assert most_inside == 4


async def test_n8n_s_own_not_registered_does_not_end_the_turns() -> None:
    """A restarted n8n answers "not registered" until it has registered its webhooks."""
    async with Readiness(ready, poll_seconds=0.01, give_up_seconds=5) as readiness:
        readiness.saw_not_ready(outage=True)
        readiness.saw_answer(from_workflow=False)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def scout() -> None:
            async with readiness.turn(time.monotonic() + 5):
                holding.set()
                await release.wait()

        task = asyncio.create_task(scout())
        await holding.wait()
        second = asyncio.create_task(scout())
        await asyncio.sleep(0.05)
        assert not second.done()
        readiness.saw_answer(from_workflow=True)
        release.set()
        await asyncio.gather(task, second)
