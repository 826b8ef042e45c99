"""The diff report of one study between two snapshots: which snapshots, and each change presented.

`build_report` makes the report's data (pure); terminal.py, markdown.py and jsoncsv.py render
it (the `diff` command's `--format` choices, from export.EXPORTERS).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .diff import diff_snapshots
from .errors import UsageError
from .meaning import Annotated, SiteCounts, annotate, site_counts
from .model import Snapshot, utc_timestamp
from .present import ARROW, Presented, present, tally

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def resolve_ref(ref: str, snapshots: Sequence[Mapping[str, Any]]) -> int:
    """Return the snapshot number a REF names: N, a date or time, `latest` or `previous`."""
    # A date names the latest snapshot observed on or before that UTC day; a time, the latest
    # observed at or before it; `previous`, the one before the latest.
    seqs = [int(row["seq"]) for row in snapshots]
    if not seqs:
        raise UsageError("no snapshots stored for this study")
    text = ref.strip().lower()
    if text == "latest":
        return seqs[-1]
    if text == "previous":
        if len(seqs) < 2:
            raise UsageError("the study has one snapshot, so there is no previous one")
        return seqs[-2]
    if re.fullmatch(r"[0-9]+", text):
        if int(text) not in seqs:
            raise UsageError(f"no snapshot {text}: snapshots are numbered 1 to {seqs[-1]}")
        return int(text)
    try:
        bound = utc_timestamp(ref)
    except ValueError:
        raise UsageError(
            f"{ref!r} is not a snapshot number, a date, `latest` or `previous`") from None
    if _DAY.fullmatch(text):
        found = [int(r["seq"]) for r in snapshots if r["observed_at"][:10] <= text]
    else:
        found = [int(r["seq"]) for r in snapshots if r["observed_at"] <= bound]
    if not found:
        raise UsageError(f"no snapshot observed on or before {ref}")
    return found[-1]


def resolve_pair(
    from_ref: str | None, to_ref: str | None, snapshots: Sequence[Mapping[str, Any]]
) -> tuple[int | None, int]:
    """Return the (from, to) snapshot numbers; by default the last two, `from` None if one."""
    to = resolve_ref(to_ref or "latest", snapshots)
    if from_ref is not None:
        return resolve_ref(from_ref, snapshots), to
    earlier = [int(row["seq"]) for row in snapshots if int(row["seq"]) < to]
    return (earlier[-1] if earlier else None), to


@dataclass(frozen=True)
class DiffReport:
    """The data of a diff report: which snapshots, and every change presented."""

    nct_id: str
    from_seq: int | None
    from_at: str | None
    to_seq: int | None
    to_at: str
    rows: tuple[Presented, ...]

    @property
    def changes(self) -> tuple[Annotated, ...]:
        """Return the annotated changes, one per row."""
        return tuple(row.item for row in self.rows)

    @property
    def sites(self) -> SiteCounts:
        """Return how many sites the new snapshot added, removed and changed."""
        counts = site_counts(row.item.change for row in self.rows)
        return counts.get((self.nct_id, self.to_at), SiteCounts())


def build_report(
    old: Snapshot | None, new: Snapshot, from_seq: int | None = None, to_seq: int | None = None
) -> DiffReport:
    """Return the diff report of a study from one snapshot to another (old None: baseline)."""
    return DiffReport(
        nct_id=new.nct_id,
        from_seq=from_seq,
        from_at=old.observed_at if old else None,
        to_seq=to_seq,
        to_at=new.observed_at,
        rows=tuple(present(item) for item in annotate(diff_snapshots(old, new))),
    )


def heading(report: DiffReport) -> str:
    """Return the report's first line: which snapshots it compares."""
    to = f"snapshot {report.to_seq} ({report.to_at})" if report.to_seq else report.to_at
    if report.from_at is None:
        return f"{report.nct_id}: {to}, the silent baseline: nothing to compare with"
    start = f"snapshot {report.from_seq} ({report.from_at})" if report.from_seq else \
        report.from_at
    return f"{report.nct_id}: {start} {ARROW} {to}"


def summary(report: DiffReport) -> str:
    """Return the count line: changed fields by severity, then sites."""
    return tally(report.changes, "changed field") if report.rows else "no field changes"
