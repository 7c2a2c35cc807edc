"""Work that outlives its caller: its failures are seen, its refusals are not logged twice."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.errors import ExecutionInFlight
from app.executions.background import BackgroundWork


async def test_an_unexpected_error_in_background_work_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise RuntimeError("cannot execute UPDATE in a read-only transaction")

    async def refused() -> None:
        raise ExecutionInFlight("someone else holds the key")

    background = BackgroundWork()
    with caplog.at_level(logging.ERROR, logger="app.executions.background"):
        tasks = [background.start(broken()), background.start(refused())]
        await asyncio.wait(tasks)
        await background.drain(grace_seconds=1)
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "read-only transaction" in str(errors[0].exc_info[1])
