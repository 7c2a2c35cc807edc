"""The budget of bytes in flight, and bodies held within it: in memory while it has room, on
disk when not, given back however a body is let go."""

from __future__ import annotations

import errno
import gc
import io
import os
import tempfile

import pytest
from typing_extensions import Buffer

from app.errors import GatewayBusy
from app.memory import Body, ByteBudget


def test_a_body_that_fits_is_held_in_memory_and_counted_until_closed() -> None:
    budget = ByteBudget(limit=100)
    body = Body(budget)
    body.write(b"a" * 30)
    body.write(b"b" * 30)
    assert (body.on_disk, body.size, budget.used) == (False, 60, 60)
    assert body.prefix(40) == b"a" * 30 + b"b" * 10
    assert b"".join(body.chunks(16)) == b"a" * 30 + b"b" * 30
    body.close()
    assert budget.used == 0


def test_a_body_that_outgrows_the_budget_goes_to_disk_whole_and_gives_memory_back() -> None:
    budget = ByteBudget(limit=100)
    other = Body(budget)
    other.write(b"o" * 50)
    body = Body(budget)
    body.write(b"a" * 40)
    body.write(b"b" * 40)  # 130 > 100: this and all before it go to disk
    body.write(b"c" * 40)
    assert (body.on_disk, body.size, budget.used) == (True, 120, 50)
    assert b"".join(body.chunks(7)) == b"a" * 40 + b"b" * 40 + b"c" * 40
    assert body.prefix(45) == b"a" * 40 + b"b" * 5
    body.close()
    assert budget.used == 50


def test_bytes_that_may_be_refused_are_refused_when_they_do_not_fit() -> None:
    budget = ByteBudget(limit=100)
    held = Body.of(b"x" * 60, budget=budget, refusable=True)
    with pytest.raises(GatewayBusy) as refused:
        Body.of(b"y" * 60, budget=budget, refusable=True)
    assert "GATE_MAX_BYTES_IN_FLIGHT" in refused.value.detail
    assert refused.value.headers["Retry-After"] == "1"
    spooled = Body.of(b"z" * 60, budget=budget, refusable=False)
    assert spooled.on_disk
    assert budget.used == 60
    held.close()
    spooled.close()
    assert budget.used == 0


def test_a_body_let_go_without_closing_gives_its_bytes_back() -> None:
    """An answer dropped on an error path, or whose caller went away, cannot leak budget."""
    budget = ByteBudget(limit=100)
    body = Body(budget)
    body.write(b"x" * 80)
    assert budget.used == 80
    del body
    gc.collect()
    assert budget.used == 0
    assert budget.peak == 80


def test_a_body_let_go_gives_its_bytes_back_without_a_collection() -> None:
    budget = ByteBudget(limit=100)
    gc.disable()
    try:
        body = Body(budget)
        body.write(b"x" * 80)
        del body
        assert budget.used == 0
    finally:
        gc.enable()


class FullDisk(io.FileIO):
    """A temporary file on a disk that takes `room` bytes, then refuses (ENOSPC)."""

    room = 0

    def write(self, data: Buffer) -> int:
        if FullDisk.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = min(FullDisk.room, memoryview(data).nbytes)
        FullDisk.room -= taken
        return super().write(memoryview(data)[:taken])


def full_disk(monkeypatch: pytest.MonkeyPatch, *, room: int) -> None:
    FullDisk.room = room

    def temporary_file(buffering: int = -1) -> FullDisk:
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        return FullDisk(fd, "w+b")

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)


@pytest.mark.parametrize("room", [0, 30, 130], ids=["at-once", "while-moving", "while-writing"])
def test_an_answer_the_disk_refuses_stays_whole_in_memory_over_the_budget(
    monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    """Lost, it would become an unknown outcome, and a retry would run the workflow again."""
    full_disk(monkeypatch, room=room)
    budget = ByteBudget(limit=100)
    body = Body(budget)
    for part in (b"a" * 60, b"b" * 60, b"c" * 60):
        body.write(part)
    assert not body.on_disk
    assert b"".join(body.chunks()) == b"a" * 60 + b"b" * 60 + b"c" * 60
    assert budget.used == 180
    body.close()
    assert budget.used == 0
