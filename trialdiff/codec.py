"""Compress raw records the way the registry's data allows: zstd with a trained dictionary.

Records are JSON documents of one schema, so a dictionary trained on the database's own
records halves what zlib keeps of each. Dictionaries live in the `dictionaries` table under
their zstd dictionary id, which every frame names in its header: a reader finds the one it
needs, so old rows stay readable after a new dictionary is trained. A dictionary is stored as
a zstd frame of itself (`stored_dictionary`): mostly fragments of records, 1 MB keeps 236 KB.
A study's latest record, once it has changed, is stored as zstd against its first record (a
raw-content dictionary), which costs a few hundred bytes for a typical edit. Rows written
before zstd are zlib.

Long change values (a posted results section: ~90 KB of JSON) and snapshot deltas are stored
with the same dictionary: a change value over `VALUE_INLINE` characters is a zstd BLOB
instead of JSON text (`pack_value`, `unpack_value`), about a fourteenth of its size.

Runs compress for speed; `trialdiff compact` compresses every blob again at `COMPACT_LEVEL`
(`Compactor`), as `git gc --aggressive` repacks: once, for bytes. Reading costs the same.
"""

from __future__ import annotations

import threading
import weakref
import zlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import zstandard

from .errors import DatabaseError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Measured on benchmark records (benchmarks/README.md): a 1 MB dictionary at level 7 keeps
# 3.1 KB of a 24 KB record (zlib level 1: 9 KB), compressing in ~0.4 ms; level 12 saves 4% more
# at 3x the time. Level 8 keeps a 5,000-study first import 1.3% smaller than 7 for 4-7% more
# time (level 9: 1.5% for 25%): a new study's record is written once and kept for good. A
# delta against the study's first record is small at any level.
LEVEL = 8
DELTA_LEVEL = 3
# Change values and snapshot deltas: on a day that rewrites every record's text, level 7 took
# 0.8 s of a 5,000-study import; level 3 takes a fifth of that and keeps 18% more bytes.
HISTORY_LEVEL = 3
# Measured on 1,000 benchmark records with their 1 MB dictionary: level 19 keeps 2,694 bytes
# of a record against level 7's 2,999 (-10%), in 9.1 ms against 0.23 ms; level 16 keeps
# 2,748 in 3.7 ms, level 22 2,690 in 12 ms. Only compacting, done once, pays for it.
COMPACT_LEVEL = 19
DICT_SIZE = 1024 * 1024
# A dictionary is compressed once, when it is trained: level 19 keeps 236 KB of 1 MB in 0.4 s
# (zlib level 9: 318 KB), and a reader loads it back in ~2 ms.
DICT_LEVEL = 19
MIN_SAMPLES = 64  # fewer records train a dictionary that does not pay for itself
MAX_SAMPLES = 300  # held parsed while training: ~60 MB; ~8 MB of JSON is enough
# A change value's JSON up to this many characters stays text, readable in SQL; dates,
# statuses and most sites are far shorter, and the 4% of values above hold 98% of the bytes.
VALUE_INLINE = 1024


class _Codec(NamedTuple):
    """What one dictionary (or none) compresses and decompresses with."""

    record: zstandard.ZstdCompressor  # at LEVEL
    history: zstandard.ZstdCompressor  # at HISTORY_LEVEL
    value: zstandard.ZstdCompressor  # a long change value: HISTORY_LEVEL, with a checksum
    reader: zstandard.ZstdDecompressor


# Per connection, its dictionaries loaded once: {dict id: codec}.
_Codecs = dict[int, _Codec]
_LOADED: weakref.WeakKeyDictionary[Any, _Codecs] = weakref.WeakKeyDictionary()
_PLAIN = _Codec(zstandard.ZstdCompressor(level=LEVEL),
                zstandard.ZstdCompressor(level=HISTORY_LEVEL),
                zstandard.ZstdCompressor(level=HISTORY_LEVEL, write_checksum=True),
                zstandard.ZstdDecompressor())


def _raw_conn(conn: Any) -> Any:
    """Return the sqlite3 connection under sqlite-utils' Database, or the connection itself."""
    return getattr(conn, "conn", conn)


def _codecs(conn: Any) -> _Codecs:
    """Return a connection's loaded dictionaries, loading them on first use.

    They are kept per connection object (sqlite-utils' Database, or trialdiff's reader
    connection); a bare sqlite3 connection cannot hold a weak reference, so it loads them anew.
    """
    try:
        loaded = _LOADED.get(conn)
    except TypeError:
        return _load(conn)
    if loaded is None:
        loaded = _LOADED[conn] = _load(conn)
    return loaded


def _load(conn: Any) -> _Codecs:
    """Read a database's dictionaries (about 2 ms for a 1 MB one)."""
    raw = _raw_conn(conn)
    exists = raw.execute("select 1 from sqlite_master where name = 'dictionaries'").fetchone()
    rows = raw.execute("select id, dictionary from dictionaries").fetchall() if exists else []
    loaded = {}
    for dict_id, stored in rows:
        try:
            loaded[dict_id] = _codec(dictionary_bytes(stored))
        except (AttributeError, TypeError, zstandard.ZstdError) as exc:  # NULL, text, garbage
            raise DatabaseError(f"compression dictionary {dict_id} cannot be read ({exc}): the "
                                "file is damaged") from exc
    return loaded


def stored_dictionary(data: bytes) -> bytes:
    """Return a trained dictionary as the `dictionaries` table keeps it: a zstd frame of it."""
    return zstandard.ZstdCompressor(level=DICT_LEVEL).compress(data)


def dictionary_bytes(stored: bytes) -> bytes:
    """Return a stored dictionary's bytes (kept as they are before schema 12)."""
    return _PLAIN.reader.decompress(stored) if stored.startswith(ZSTD_MAGIC) else stored


def _codec(data: bytes) -> _Codec:
    """Return the compressors and the decompressor of one trained dictionary."""
    dictionary = zstandard.ZstdCompressionDict(data)
    return _Codec(zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary),
                  zstandard.ZstdCompressor(level=HISTORY_LEVEL, dict_data=dictionary),
                  zstandard.ZstdCompressor(level=HISTORY_LEVEL, dict_data=dictionary,
                                           write_checksum=True),
                  zstandard.ZstdDecompressor(dict_data=dictionary))


def current_dictionary(conn: Any) -> int | None:
    """Return the id of the newest dictionary, or None when none was trained yet."""
    loaded = _codecs(conn)
    return max(loaded) if loaded else None


def train(conn: Any, samples: Sequence[bytes], trained_at: str) -> int | None:
    """Train a dictionary on some records, store it and return its id (None: too few)."""
    if len(samples) < MIN_SAMPLES:
        return None
    raw = _raw_conn(conn)
    (dict_id,) = raw.execute("select coalesce(max(id), 0) + 1 from dictionaries").fetchone()
    try:
        trained = zstandard.train_dictionary(DICT_SIZE, list(samples[:MAX_SAMPLES]),
                                             dict_id=dict_id, level=LEVEL, threads=1,
                                             k=1024, d=8)  # optimising k and d: 60x longer
    except zstandard.ZstdError:
        return None  # samples too alike or too small to learn from
    data = trained.as_bytes()
    raw.execute("insert into dictionaries (id, trained_at, samples, dictionary) "
                "values (?, ?, ?, ?)",
                [dict_id, trained_at, min(len(samples), MAX_SAMPLES), stored_dictionary(data)])
    _codecs(conn)[dict_id] = _codec(data)
    return int(dict_id)


def compress(conn: Any, data: bytes, base: bytes | None = None, history: bool = False) -> bytes:
    """Compress a record: against `base` (another record's bytes) if given, else the dictionary.

    `history` (a change value or a snapshot delta) takes the faster level.
    """
    if base is not None:
        return _against(base, DELTA_LEVEL).compress(data)
    codec = _current_codec(conn)
    return (codec.history if history else codec.record).compress(data)


def _current_codec(conn: Any) -> _Codec:
    """Return what compresses with the database's newest dictionary (or none)."""
    dict_id = current_dictionary(conn)
    return _codecs(conn)[dict_id] if dict_id is not None else _PLAIN


def _raw_content(base: bytes) -> zstandard.ZstdCompressionDict:
    """Return another record's bytes as a zstd dictionary (raw content, no trained tables)."""
    return zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def _against(base: bytes, level: int) -> zstandard.ZstdCompressor:
    """Return a compressor whose dictionary is another record's bytes."""
    return zstandard.ZstdCompressor(level=level, dict_data=_raw_content(base))


class Compactor:
    """Compress blobs again at COMPACT_LEVEL with the newest dictionary, from many threads."""

    def __init__(self, conn: Any) -> None:
        dict_id = current_dictionary(conn)
        raw = _raw_conn(conn)
        row = raw.execute("select dictionary from dictionaries where id = ?",
                          [dict_id]).fetchone() if dict_id is not None else None
        self._dictionary: zstandard.ZstdCompressionDict | None = None
        if row:
            # Digested once and shared: zstd's digested dictionary is read-only, so threads may
            # share it, and one per thread cost 30 MB more at level 19.
            self._dictionary = zstandard.ZstdCompressionDict(dictionary_bytes(row[0]))
            self._dictionary.precompute_compress(level=COMPACT_LEVEL)
        self._local = threading.local()  # but a compressor serves one thread at a time

    def compress(self, data: bytes, base: bytes | None = None, checksum: bool = False) -> bytes:
        """Compress a record, a change value or a snapshot delta; `base` as in `compress`.

        `checksum`: a long change value keeps the checksum `pack_value` gave it.
        """
        if base is not None:
            return _against(base, COMPACT_LEVEL).compress(data)
        name = "summed" if checksum else "plain"
        compressor = getattr(self._local, name, None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=COMPACT_LEVEL, dict_data=self._dictionary,
                                                  write_checksum=checksum)
            setattr(self._local, name, compressor)
        return compressor.compress(data)


def decompress(conn: Any, blob: bytes, base: bytes | None = None) -> bytes:
    """Return a stored record's bytes: zlib, zstd with a dictionary, or zstd against `base`.

    A blob that does not decompress (the file was damaged) is a DatabaseError, which `check`
    reports and every command words, rather than zstd's or zlib's own error.
    """
    for cell in (blob, base):
        if cell is not None and not isinstance(cell, bytes):  # a hand edit, or a damaged page
            raise DatabaseError(f"a stored blob is {type(cell).__name__}, not compressed bytes: "
                                "the file is damaged")
    if blob is None:
        raise DatabaseError("a stored blob is NULL: the file is damaged")
    try:
        if base is not None and blob.startswith(ZSTD_MAGIC):
            return zstandard.ZstdDecompressor(dict_data=_raw_content(base)).decompress(blob)
        loaded = _codecs(conn)
        try:
            return _decompress(loaded, blob)
        except KeyError:  # trained by another connection since this one loaded them
            loaded.update(_load(conn))
            return _decompress(loaded, blob)
    except KeyError as exc:
        raise DatabaseError(f"a stored blob needs compression dictionary {exc}, which the "
                            "dictionaries table does not hold: the file is damaged") from exc
    except (zstandard.ZstdError, zlib.error) as exc:
        raise DatabaseError(f"a stored blob does not decompress ({exc}): the file is "
                            "damaged") from exc


def record_bytes(conn: Any, record: bytes, base: bytes | None) -> tuple[bytes, bytes | None]:
    """Return a records row's latest record and its first one (None if it is the first)."""
    first = decompress(conn, base) if base is not None else None
    return decompress(conn, record, first), first


def _decompress(loaded: _Codecs, blob: bytes) -> bytes:
    """Return a zlib or zstd blob's bytes; KeyError when its dictionary is not loaded."""
    if not blob.startswith(ZSTD_MAGIC):
        return zlib.decompress(blob)
    dict_id = zstandard.get_frame_parameters(blob).dict_id
    return (loaded[dict_id] if dict_id else _PLAIN).reader.decompress(blob)


def pack_value(conn: Any, text: str | None, inline: int = VALUE_INLINE) -> str | bytes | None:
    """Return a change value's JSON as stored: itself, or zstd (a BLOB) when over `inline`.

    The frame carries a checksum (4 bytes): a flipped byte could otherwise decompress into
    other words, which every reader would show as the registry's. (A record or a delta that
    did would fail `check`'s hashes; a value shows as it is.)
    """
    if text is None or len(text) <= inline:
        return text
    return _current_codec(conn).value.compress(text.encode("utf-8"))


def unpack_value(conn: Any, cell: str | bytes | None) -> str | None:
    """Return a stored change value's JSON text (see `pack_value`)."""
    if isinstance(cell, bytes):
        return decompress(conn, cell).decode("utf-8")
    return cell


def value_reader(conn: Any) -> Callable[[str | bytes | None], str | None]:
    """Return `unpack_value` over the dictionaries a connection has now (an SQL function's)."""
    loaded = _load(conn)  # once, here: an SQL function should not query its own connection

    def read(cell: str | bytes | None) -> str | None:
        return _decompress(loaded, cell).decode("utf-8") if isinstance(cell, bytes) else cell

    return read
