"""Numbers in headers and query strings: ASCII digits only, and not too many of them.

`str.isdigit()` also accepts '²' and other Unicode digits that `int()` then refuses, and `int()`
refuses more than 4,300 digits: either way a 500 where a 400, or ignoring the value, was meant.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def ascii_int(value: str, *, max_digits: int) -> int | None:
    """`value` as a non-negative integer, or None unless it is 1 to `max_digits` ASCII digits."""
    if len(value) > max_digits or not _DIGITS.fullmatch(value):
        return None
    return int(value)
