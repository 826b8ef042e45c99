"""The steps that take an older database one schema version up (schema.migrate runs them).

Before any step, `schema.complete_tables` gives the file every table and column the schema
declares that it lacks: a step reads the tables as the current code does (a re-keying step
rewrites history with today's code), and the first versions' schema changed more than once
under one number. A column added so is empty, NULL, which every reader takes as its absent
value; the steps fill what they must. Every step is idempotent, and the version an upgrade
started from stays in `meta` until its last step is done (schema_version.UPGRADING_FROM), so
an upgrade stopped half way simply runs again.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from .schema_version import SCHEMA_VERSION


def upgrade_from(db: sqlite_utils.Database, version: int) -> None:
    """Take a database from an older schema version to the current one, in place.

    Last, every change's severity and facts are computed by the current rules: the rules
    may have moved since the file was written, and `check` would find them stale.
    """
    from .annotations import reannotate

    for old in range(version, SCHEMA_VERSION):
        MIGRATIONS[old](db)
    reannotate(db)


def _v1_to_v2(db: sqlite_utils.Database) -> None:
    """Move last sightings to their own table (and drop a cache the first versions kept)."""
    columns = db["studies"].columns_dict
    if "last_seen_at" in columns:
        db.execute("insert or ignore into sightings (nct_id, last_seen_at) "
                   "select nct_id, last_seen_at from studies")
        db.execute("alter table studies drop column last_seen_at")
    if "unit_hashes" in columns:
        db.execute("alter table studies drop column unit_hashes")


def _v2_to_v3(db: sqlite_utils.Database) -> None:
    """Keep what the history listing says of each version: its QC date, status and sections.

    Versions backfilled before this were dated by the listing's date, which is the QC date,
    so that is what their `qc_date` becomes; their `version_date` is left as it was stored.
    A file of schema 2 as first written still keeps sightings in `studies`: moved first.
    """
    _v1_to_v2(db)
    db.execute("update history_versions set qc_date = version_date where qc_date is null")


def _tables_only(db: sqlite_utils.Database) -> None:
    """Take a version up that only added tables or columns: `complete_tables` added them.

    Schema 4 added the data release each tracked study and query was fetched under, and
    ETags; schema 5 the alert tables; schema 6 each change's severity and facts as columns,
    which `upgrade_from` fills.
    """


def _v6_to_v7(db: sqlite_utils.Database) -> None:
    """Keep each study's first record as `base`, and recompress zlib records with zstd."""
    from .upgrades import recompress_records  # zstandard is loaded only by steps that compress

    recompress_records(db)


def _step(name: str, studies: str | None = None) -> Callable[[sqlite_utils.Database], None]:
    """Return a data step, imported when it runs: upgrades.py's `name`, or history.py's per study.

    With `studies` (a query choosing them), history's `name` stores each anew, 200 studies to a
    transaction: it finds nothing left to do in a study done already, so a killed migration
    simply runs again. (Writers load both modules anyway; zstandard and xxhash load here.)
    """
    def step(db: sqlite_utils.Database) -> None:
        from . import history, upgrades
        from .query import transaction

        if studies is None:
            getattr(upgrades, name)(db)
            return
        nct_ids = [row[0] for row in db.execute(studies)]
        for start in range(0, len(nct_ids), 200):
            with transaction(db):
                for nct_id in nct_ids[start : start + 200]:
                    getattr(history, name)(db, nct_id)

    return step


# Upgrades from each older schema version; each function takes the database one version up.
MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _tables_only, 4: _tables_only, 5: _tables_only,
    6: _v6_to_v7,
    # Re-keying paths rewrites history with the current code, so the steps after it take
    # rows already in the current form as well as older ones.
    7: _step("rekey_study",  # paths to the field-path spec's rules 5 and 6 (2026)
             "select distinct nct_id from snapshots where delta is not null order by 1"),
    8: _step("compress_history"),  # long change values and deltas with the dictionary
    9: _step("share_long_values"),  # a value a delta and its change both held, once
    10: _step("rehash_gates"),  # the gates: XXH3 instead of blake2b
    11: _step("compress_dictionaries"),  # each dictionary a zstd frame of itself
    12: _step("rediff_seams",  # changes across markups by their words, not their marks
              "select nct_id from snapshots group by nct_id "
              "having count(distinct coalesce(markup, 'markdown')) > 1 order by 1"),
    13: _step("rediff_beyond_deepdiff"),  # edits inside values too big for DeepDiff, walked
}


