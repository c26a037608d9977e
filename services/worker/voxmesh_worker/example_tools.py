"""Python tools used by the example agents in ``services/worker/agents/``."""

from __future__ import annotations

import itertools

_booking_numbers = itertools.count(101)


async def book_table(day: str, time: str, party_size: int, name: str) -> dict[str, object]:
    """Books a table (an in-memory stand-in for a reservation system)."""
    return {"confirmed": True, "booking_number": next(_booking_numbers), "day": day,
            "time": time, "party_size": party_size, "name": name}
