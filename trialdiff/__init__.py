"""trialdiff: track what changed in ClinicalTrials.gov study records.

    import trialdiff

    with trialdiff.open("snapshots/trialdiff.db") as tracker:
        run = tracker.import_paths(["snapshots/sample"])
        for change in tracker.changes(min_severity="major"):
            print(change.to_dict())
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        BusyError,
        DatabaseError,
        FetchError,
        ForbiddenError,
        InputError,
        InvalidResponse,
        OutOfOrderError,
        PagingError,
        RejectedRequest,
        ResponseTooLarge,
        ShapeError,
        TrialdiffError,
        UnknownStudy,
        UsageError,
    )
    from .lifecycle import Change, Run, Sink
    from .model import (
        Backfilled,
        Event,
        Failed,
        LeftOut,
        Observation,
        Outcome,
        PageDone,
        Resumed,
        ShapeWarning,
        UpToDate,
    )
    from .tracker import Tracker, open

__version__ = "0.14.0"

# Where each public name lives. They load on first use, so `import trialdiff` (and the CLI's
# fast commands) does not pull in SQLite, httpx and rich.
_HOMES = {
    # The whole tree errors.py documents, so that any error a method raises can be caught.
    **dict.fromkeys(("BusyError", "DatabaseError", "FetchError", "ForbiddenError", "InputError",
                     "InvalidResponse", "OutOfOrderError", "PagingError", "RejectedRequest",
                     "ResponseTooLarge", "ShapeError", "TrialdiffError", "UnknownStudy",
                     "UsageError"), "errors"),
    "Sink": "lifecycle", "Outcome": "model", "Change": "lifecycle",
    "Run": "lifecycle", "Tracker": "tracker", "open": "tracker",
    # What a Sink's show() is given: one of these (model.Outcome), matched on by class.
    **dict.fromkeys(("Backfilled", "Event", "Failed", "LeftOut", "Observation", "PageDone",
                     "Resumed", "ShapeWarning", "UpToDate"), "model"),
}

__all__ = [
    "Backfilled", "BusyError", "Change", "DatabaseError", "Event", "Failed", "FetchError",
    "ForbiddenError", "InputError", "InvalidResponse", "LeftOut", "Observation",
    "OutOfOrderError", "Outcome", "PageDone", "PagingError", "RejectedRequest",
    "ResponseTooLarge", "Resumed", "Run", "ShapeError", "ShapeWarning", "Sink", "Tracker",
    "TrialdiffError", "UnknownStudy", "UpToDate", "UsageError", "open",
]


def __getattr__(name: str) -> Any:
    """Return a public name, importing its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'trialdiff' has no attribute {name!r}")
    return getattr(import_module(f".{_HOMES[name]}", __name__), name)


def __dir__() -> list[str]:
    """List the public names too, which load on first use (tab completion, `dir()`)."""
    return sorted({*globals(), *__all__})
