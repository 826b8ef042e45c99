"""The codec on real records: dictionaries, records against their first, long change values."""

from __future__ import annotations

import copy
import sqlite3
import zlib

import orjson
import pytest
import zstandard
from conftest import FIXTURES, real_records, version_pair

from trialdiff import codec
from trialdiff.errors import DatabaseError
from trialdiff.records import raw_json, stable_part
from trialdiff.schema import open_db

AT = "2026-05-11T00:00:00Z"
PAIRS = sorted(p.name for p in (FIXTURES / "versions").iterdir() if p.is_dir())


def stored_records() -> list[bytes]:
    """Return the real fixture records as the database stores them (compact, stable part)."""
    return [raw_json(stable_part(record)) for record in real_records()]


@pytest.fixture
def conn(db_path: str) -> sqlite3.Connection:
    """Return a database with no dictionary yet."""
    return open_db(db_path).conn


def test_a_trained_dictionary_shrinks_records_and_each_frame_names_its_own(
    conn: sqlite3.Connection,
) -> None:
    records = stored_records()
    plain = [codec.compress(conn, data) for data in records]
    assert codec.current_dictionary(conn) is None
    assert codec.train(conn, records[:10], AT) is None  # too few samples to pay for itself
    assert codec.train(conn, records * 3, AT) == 1
    first = [codec.compress(conn, data) for data in records]
    assert sum(map(len, first)) < 0.7 * sum(map(len, plain))
    # A second dictionary: new rows name it, old rows still name (and read with) the first.
    assert codec.train(conn, list(reversed(records)) * 3, AT) == 2
    second = [codec.compress(conn, data) for data in records]
    for blobs, dict_id in ((plain, 0), (first, 1), (second, 2)):
        assert {codec.zstandard.get_frame_parameters(b).dict_id for b in blobs} == {dict_id}
        assert [codec.decompress(conn, blob) for blob in blobs] == records


def test_a_dictionary_is_stored_as_a_zstd_frame_of_itself_and_an_older_raw_one_still_loads(
    db_path: str,
) -> None:
    records = stored_records()
    writer = open_db(db_path).conn
    codec.train(writer, records * 3, AT)
    blobs = [codec.compress(writer, data) for data in records]
    (stored,) = writer.execute("select dictionary from dictionaries").fetchone()
    dictionary = codec.dictionary_bytes(stored)
    assert stored.startswith(codec.ZSTD_MAGIC) and dictionary.startswith(b"\x37\xa4\x30\xec")
    assert len(stored) < 0.35 * len(dictionary)  # mostly fragments of records, compressible
    # Schema 11 kept the dictionary's bytes as they are: a reader takes either.
    writer.execute("update dictionaries set dictionary = ?", [dictionary])
    writer.commit()
    assert [codec.decompress(open_db(db_path).conn, blob) for blob in blobs] == records


def test_a_dictionary_trained_by_another_connection_is_loaded_when_a_frame_names_it(
    db_path: str,
) -> None:
    reader, writer = open_db(db_path).conn, open_db(db_path).conn
    records = stored_records()
    assert codec.current_dictionary(reader) is None  # the reader has loaded none
    codec.train(writer, records * 3, AT)
    blob = codec.compress(writer, records[0])
    assert codec.decompress(reader, blob) == records[0]


def test_a_later_record_is_stored_against_the_first_and_read_back_with_it(
    conn: sqlite3.Connection,
) -> None:
    codec.train(conn, stored_records() * 3, AT)
    first = version_pair("NCT04280705")[0]
    edited = copy.deepcopy(first)
    edited["protocolSection"]["statusModule"]["overallStatus"] = "WITHDRAWN"
    # A status edit costs a few dozen bytes against the first record; each real later version
    # (some with results posted) costs what it adds, and all read back exactly.
    for older, newer, most in ((first, edited, 100), *[(*version_pair(n), None) for n in PAIRS]):
        old_bytes, new_bytes = raw_json(stable_part(older)), raw_json(stable_part(newer))
        base = codec.compress(conn, old_bytes)
        against = codec.compress(conn, new_bytes, base=old_bytes)
        if most is not None:
            assert len(against) < most < len(codec.compress(conn, new_bytes))
        assert codec.record_bytes(conn, against, base) == (new_bytes, old_bytes)
        assert codec.record_bytes(conn, base, None) == (old_bytes, None)  # the first: own row


def test_rows_written_before_zstd_stay_readable(conn: sqlite3.Connection) -> None:
    data = stored_records()[0]
    assert codec.decompress(conn, zlib.compress(data)) == data


def test_a_long_change_value_is_stored_compressed_and_a_short_one_as_text(
    conn: sqlite3.Connection,
) -> None:
    codec.train(conn, stored_records() * 3, AT)
    results = next(r["resultsSection"] for r in real_records() if "resultsSection" in r)
    long_value = orjson.dumps(results).decode()
    short_value = '{"date":"2024-06-14","type":"ACTUAL"}'
    assert len(long_value) > codec.VALUE_INLINE >= len(short_value)
    assert codec.pack_value(conn, short_value) == short_value
    assert codec.pack_value(conn, None) is None
    packed = codec.pack_value(conn, long_value)
    assert isinstance(packed, bytes) and len(packed) < len(long_value) / 4
    read = codec.value_reader(conn)
    for value, cell in ((long_value, packed), (short_value, short_value), (None, None)):
        assert codec.unpack_value(conn, cell) == value
        assert read(cell) == value


def test_a_long_change_value_carries_a_checksum_so_a_flipped_byte_never_reads_as_words(
    conn: sqlite3.Connection,
) -> None:
    # Without one, a flipped byte decompressed into other words ("treatmeft"), which every
    # reader showed as the registry's. A record or a delta that did would fail check's hashes.
    codec.train(conn, stored_records() * 3, AT)
    values = [orjson.dumps(r["resultsSection"]).decode() for r in real_records()
              if "resultsSection" in r][:20]
    silent = failed = tried = 0
    for value in values:
        packed = codec.pack_value(conn, value)
        assert isinstance(packed, bytes)
        assert zstandard.get_frame_parameters(packed).has_checksum
        for offset in range(8, len(packed), max(1, len(packed) // 25)):
            damaged = bytearray(packed)
            damaged[offset] ^= 0x20
            tried += 1
            try:
                silent += codec.unpack_value(conn, bytes(damaged)) != value
            except DatabaseError:
                failed += 1
    assert (silent, failed) == (0, tried) and tried > 100
    # Compacting keeps it: the compactor gives change values theirs.
    compactor = codec.Compactor(conn)
    assert zstandard.get_frame_parameters(
        compactor.compress(values[0].encode(), checksum=True)).has_checksum
    assert not zstandard.get_frame_parameters(compactor.compress(values[0].encode())).has_checksum
