"""Keeping a lease alive while a forward is in flight."""

from __future__ import annotations

import asyncio

from app.executions.lease import LeaseKeeper


async def test_a_renewal_that_raised_is_tried_again() -> None:
    renewals = 0
    third = asyncio.Event()

    async def renew() -> bool:
        nonlocal renewals
        renewals += 1
        if renewals == 1:
            raise RuntimeError("the database went away mid-renewal")
        if renewals == 3:
            third.set()
        return True

    async with LeaseKeeper(renew, interval_seconds=0.01):
        await asyncio.wait_for(third.wait(), 5)


async def test_renewal_stops_once_the_lease_is_lost() -> None:
    renewals: list[int] = []
    lost = asyncio.Event()

    async def renew() -> bool:
        renewals.append(1)
        lost.set()
        return False

    async with LeaseKeeper(renew, interval_seconds=0.01):
        await asyncio.wait_for(lost.wait(), 5)
        await asyncio.sleep(0.05)  # five intervals: any further renewal would have run by now
    assert len(renewals) == 1
