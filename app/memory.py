"""The process's budget of bytes in flight: request bodies and answers held for callers.

Every trigger holds its body from the first byte until the gateway is done with it (waiting for
a connection slot, for n8n, for a `Prefer: wait`), and its answer until the caller has read the
last byte. Without a bound, callers that send big bodies and read nothing held memory without
limit.

What the gateway may refuse is admitted only while it fits: a request body as it arrives, a
replay (nothing changes when either is refused, and the caller retries). An answer from n8n is
never refused, because its workflow ran: what does not fit goes to disk (`Body`).
"""

from __future__ import annotations

import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from app.errors import GatewayBusy

CHUNK_BYTES = 64 * 1024


@dataclass
class ByteBudget:
    limit: int
    used: int = 0
    peak: int = 0

    def holding(self) -> Holding:
        return Holding(self)

    def _take(self, size: int, *, may_refuse: bool) -> None:
        if may_refuse and self.used + size > self.limit:
            raise GatewayBusy(
                f"The gateway holds {self.used} of its {self.limit} bytes for requests in "
                f"flight (GATE_MAX_BYTES_IN_FLIGHT) and cannot take {size} more now; "
                "nothing was forwarded. Retry later."
            )
        self.used += size
        self.peak = max(self.peak, self.used)

    def _give_back(self, size: int) -> None:
        self.used -= size


@dataclass
class Holding:
    """What one request holds of the budget; given back whole, once."""

    budget: ByteBudget
    size: int = field(default=0)

    def take(self, size: int) -> None:
        """Admits `size` more bytes, or raises `GatewayBusy` if they do not fit."""
        self.budget._take(size, may_refuse=True)
        self.size += size

    def take_anyway(self, size: int) -> None:
        """Counts bytes held whatever the budget says: an answer the disk could not take."""
        self.budget._take(size, may_refuse=False)
        self.size += size

    def release(self) -> None:
        self.budget._give_back(self.size)
        self.size = 0


class Body:
    """An answer's bytes as they arrive: in memory, charged to the budget, while it has room;
    from the first chunk that does not fit, all of it in an unlinked temporary file (a proxy's
    buffering to disk), which the system deletes however the process ends. A disk that refuses
    (full, read-only) does not lose the answer: it stays in memory, over the budget.

    Given back to the budget when closed, or when the last reference to it goes, whichever
    comes first: an answer dropped on any path (its caller gone, an error) cannot leak.
    File writes and reads are not sent to a thread: they go to the page cache, 64 KiB at a time.
    """

    def __init__(self, budget: ByteBudget | None = None) -> None:
        self.size = 0
        self._holding = (budget or ByteBudget(limit=sys.maxsize)).holding()
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None
        self._finalizer: Callable[[], object] = weakref.finalize(
            self, _give_back, self._holding, self._chunks
        )

    @classmethod
    def of(cls, data: bytes, *, budget: ByteBudget | None = None, refusable: bool) -> Body:
        """Bytes in memory, charged: refusable ones raise `GatewayBusy` when they do not fit,
        others go to disk."""
        body = cls(budget)
        if refusable:
            body._holding.take(len(data))
            body.size = len(data)
            body._chunks.append(data)
        else:
            body.write(data)
        return body

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._file is None:
            try:
                self._holding.take(len(data))
            except GatewayBusy:
                self._to_disk()
            else:
                self._chunks.append(data)
                return
        if self._file is None:  # the disk refused: over the budget rather than lost
            self._holding.take_anyway(len(data))
            self._chunks.append(data)
            return
        unwritten = _write_all(self._file, data)
        if unwritten:
            self._back_to_memory(unwritten)

    def prefix(self, size: int) -> bytes:
        """The first `size` bytes (all of them when there are fewer)."""
        if self._file is not None:
            self._file.seek(0)
            return self._file.read(size)
        taken, length = [], 0
        for chunk in self._chunks:
            if length >= size:
                break
            taken.append(chunk[: size - length])
            length += len(taken[-1])
        return b"".join(taken)

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes in order, in chunks of at most `size` bytes."""
        if self._file is not None:
            self._file.seek(0)
            while chunk := self._file.read(size):
                yield chunk
            return
        for chunk in self._chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), size):
                yield bytes(view[start : start + size]) if len(view) > size else chunk

    def close(self) -> None:
        self._finalizer()
        if self._file is not None:
            self._file.close()

    def _to_disk(self) -> None:
        try:
            # Unbuffered: after a failed write the file holds exactly what the system took.
            file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - closed with the body
        except OSError:
            return  # no disk: the body stays in memory
        if any(_write_all(file, chunk) for chunk in self._chunks):
            file.close()
            return
        self._file = file
        self._finalizer()  # the chunks are on disk now: memory given back
        self._finalizer = weakref.finalize(self, file.close)

    def _back_to_memory(self, unwritten: bytes) -> None:
        """The disk filled while the body was written: what it holds comes back to memory."""
        assert self._file is not None
        file, self._file = self._file, None
        file.seek(0)
        chunks = [*iter(lambda: file.read(CHUNK_BYTES), b""), unwritten]
        file.close()
        self._chunks.extend(chunks)
        self._holding.take_anyway(sum(len(chunk) for chunk in chunks))
        self._finalizer = weakref.finalize(self, _give_back, self._holding, self._chunks)


def _write_all(file: BinaryIO, data: bytes) -> bytes:
    """Writes `data` to an unbuffered file; what the system would not take (b"" for none)."""
    view = memoryview(data)
    try:
        while view:
            written = file.write(view)
            if not written:
                break
            view = view[written:]
    except OSError:
        pass
    return bytes(view)


def _give_back(holding: Holding, chunks: list[bytes]) -> None:
    chunks.clear()
    holding.release()
