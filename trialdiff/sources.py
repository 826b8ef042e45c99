"""Read study records from one file, streaming: JSON, API pages, lists, NDJSON, zips.

`read_file` yields one `SourceItem` per record or per broken input, so one bad record never
stops the others, and memory is bounded by the largest record, not by the input. Which files
an input names (folders, archives of dated folders) is folders.py's.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import orjson

from .registry import DEFAULT

RECORD_SUFFIXES = (".json", ".ndjson", ".jsonl")  # what a zip's members may be
# Gzipped too: NDJSON dumps and API pages are often kept that way.
SUFFIXES = (*RECORD_SUFFIXES, ".zip", *(suffix + ".gz" for suffix in RECORD_SUFFIXES))
# Files up to this size parse in one go (fast); larger ones stream record by record.
WHOLE_FILE_LIMIT = 64 * 1024 * 1024
# No real record is near this; a larger one is a broken input, not a study.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some Windows tools write first
# A record's line is ~30 KB: with the default 8 KB buffer each line is read in pieces and
# joined (74 ms against 17 ms for a 138 MB day's lines, measured).
_LINE_BUFFER = 1 << 20
NOT_A_STUDY = "not a study: no protocolSection.identificationModule.nctId like NCT01234567"


@dataclass(frozen=True)
class SourceItem:
    """One record read from an input, or the reason an input could not be read."""

    label: str  # file, file:line, or zip!member, for messages
    study: dict[str, Any] | None = None
    nct_id: str | None = None
    error: str | None = None
    raw: bytes | None = None  # the record's own bytes, when it had a file or line to itself

    @property
    def unparsed(self) -> bool:
        """Tell whether the item holds only a record's bytes, not parsed yet (see `parsed`)."""
        return self.study is None and self.error is None and self.raw is not None


class LazyRecord(Mapping[str, Any]):
    """A record's bytes, parsed when first read: a writer that reads none of it never parses."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._value: dict[str, Any] | None = None

    def _record(self) -> dict[str, Any]:
        if self._value is None:
            self._value = orjson.loads(self._raw)
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._record()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._record())

    def __len__(self) -> int:
        return len(self._record())


def parsed(item: SourceItem) -> SourceItem:
    """Return an item with its record parsed and checked: itself, or its bytes parsed."""
    if not item.unparsed:
        return item
    assert item.raw is not None
    try:
        value = orjson.loads(item.raw)
    except orjson.JSONDecodeError as exc:
        return SourceItem(item.label, error=_orjson_error(exc, item.raw))
    return _checked(item.label, value, item.raw)


def _records(label: str, value: Any) -> Iterator[SourceItem]:
    """Yield the studies in a parsed JSON value: a study, a page or a list of studies."""
    if isinstance(value, dict) and "studies" in value and "protocolSection" not in value:
        value = value["studies"]
        if not isinstance(value, list):
            yield SourceItem(label, error="'studies' is not a list")
            return
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield _checked(f"{label}[{index}]", item)
    else:
        yield _checked(label, value)


def _checked(label: str, value: Any, raw: bytes | None = None) -> SourceItem:
    """Return a record as an item, or an error when it is not a study object."""
    nct_id = DEFAULT.study_id(value)
    if nct_id is None:
        return SourceItem(label, error=NOT_A_STUDY)
    return SourceItem(label, value, nct_id, raw=raw)


def _streamed(label: str, value: Any) -> SourceItem:
    """Check a record the streaming parser read; refuse what the whole-file parser refuses."""
    try:
        # Python's parser accepts lone surrogate escapes (\ud800), which no text store can
        # hold; orjson, the whole-file parser, refuses them. Keep both paths alike.
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        if "surrogate" in str(exc):
            return SourceItem(label, error="not valid Unicode: an unpaired surrogate escape")
    return _checked(label, value)


# Python's parser reads what orjson, the whole-file parser, does not: NaN and Infinity, numbers
# past a double's range, integers past 64 bits kept whole. Both paths read a record alike.
def _no_constant(name: str) -> Any:
    """Refuse NaN, Infinity and -Infinity, as orjson does."""
    raise ValueError(f"not valid JSON: {name} is not a JSON value")


def _finite(text: str) -> float:
    """Read a number as a double, refusing one past its range, as orjson does."""
    number = float(text)
    if number in (math.inf, -math.inf):
        raise ValueError(f"not valid JSON: {text} is infinity when read as a double")
    return number


def _orjson_int(text: str) -> int | float:
    """Read an integer as orjson does: whole within 64 bits, else as a double."""
    number = int(text)
    return number if -(1 << 63) <= number < (1 << 64) else _finite(text)


def _parse_error(exc: BaseException) -> str:
    """Return a short reason a JSON text could not be parsed."""
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested too deep"
    if not isinstance(exc, json.JSONDecodeError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"not valid JSON: {text}"


def _stream_json(label: str, stream: IO[bytes]) -> Iterator[SourceItem]:
    """Yield the records of a large JSON file one at a time, without loading it whole."""
    reader = io.TextIOWrapper(stream, encoding="utf-8-sig")
    decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite,
                               parse_int=_orjson_int)
    buffer = ""
    pos = 0

    def fill() -> bool:
        nonlocal buffer, pos
        chunk = reader.read(_CHUNK)
        buffer = buffer[pos:] + chunk
        pos = 0
        return bool(chunk)

    def skip(chars: str) -> str:
        nonlocal pos
        while True:
            while pos < len(buffer) and buffer[pos] in chars:
                pos += 1
            if pos < len(buffer) or not fill():
                return buffer[pos : pos + 1]

    def value() -> Any:
        nonlocal pos
        skip(" \t\r\n")
        while True:
            try:
                result, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                if len(buffer) - pos > MAX_RECORD_BYTES:
                    raise ValueError(f"a record is larger than {MAX_RECORD_BYTES} bytes") from None
                if not fill():
                    if not buffer[pos:].strip():  # a comma, then nothing: a cut download
                        raise ValueError("the file ends where a value should follow: it is "
                                         "cut short") from None
                    raise
                continue
            # A number at the buffer's end may be cut short: make sure something follows.
            if end == len(buffer) and fill():
                continue
            if end - pos > MAX_RECORD_BYTES:
                raise ValueError(f"a record is larger than {MAX_RECORD_BYTES} bytes")
            pos = end
            return result

    def after(item: str, close: str) -> bool:
        """Step past the comma after an item; True at the closing bracket (stepped past too)."""
        nonlocal pos
        # Strict, as a whole-file parse is: a cut download must not read as a shorter day.
        found = skip(" \t\r\n")
        if not found:
            raise ValueError(f"the file ends after {item}, with no closing '{close}': it is "
                             "cut short")
        if found not in (",", close):
            raise ValueError(f"expected ',' or '{close}' after {item}")
        pos += 1
        return found == close

    def array(where: str) -> Iterator[SourceItem]:
        nonlocal pos
        pos += 1  # the [
        if skip(" \t\r\n") == "]":
            pos += 1
            return
        index = 0
        while True:
            yield _streamed(f"{where}[{index}]", value())
            index += 1
            if after(f"item {index - 1}", "]"):
                return

    try:
        fill()
        first = skip(" \t\r\n")
        if first == "[":
            yield from array(label)
        elif first != "{":
            raise ValueError("expected a JSON object or list")
        else:  # a large object is an API page: stream its "studies", take other keys whole
            pos += 1
            found = skip(" \t\r\n") == "}"
            studies = False
            while not found:
                key = value()
                if skip(" \t\r\n") != ":":
                    raise ValueError("expected ':' after an object key")
                pos += 1
                if key == "studies" and skip(" \t\r\n") == "[":
                    studies = True
                    yield from array(label)
                else:
                    value()
                found = after(f"key {key!r}", "}")
            if not studies:
                raise ValueError("a large JSON object must be an API page with 'studies'")
        if skip(" \t\r\n"):
            raise ValueError("extra data after the JSON value")
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        yield SourceItem(label, error=_parse_error(exc) if not isinstance(exc, UnicodeDecodeError)
                         else "not UTF-8 text")


def _read_json(label: str, opener: Any, size: int) -> Iterator[SourceItem]:
    """Yield the records of one JSON input, whole if small, streamed if large."""
    if size > WHOLE_FILE_LIMIT:
        with opener() as stream:
            yield from _stream_json(label, stream)
        return
    with opener() as stream:
        data = stream.read()
    data = data.removeprefix(_BOM)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        yield SourceItem(label, error=_orjson_error(exc, data))
        return
    if isinstance(value, dict) and "protocolSection" in value:
        yield _checked(label, value, data)  # one study per file: its bytes are its own
    else:
        yield from _records(label, value)


def _orjson_error(exc: orjson.JSONDecodeError, data: bytes) -> str:
    """Return a short reason orjson could not parse some bytes."""
    if "recursion" in str(exc).lower() or "depth limit" in str(exc):
        return "not valid JSON: nested too deep"
    if data.startswith(b"\x1f\x8b"):  # not "not UTF-8": the cure is a name, not an encoding
        return "gzip-compressed, but not named so: name it .json.gz, .ndjson.gz or .jsonl.gz"
    if data.startswith(b"PK\x03\x04"):
        return "a zip archive, but not named so: name it .zip"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return f"not valid JSON: {exc}"


def _read_ndjson(label: str, stream: IO[bytes] | gzip.GzipFile, parse: bool
                 ) -> Iterator[SourceItem]:
    """Yield one record per line of an NDJSON input; blank lines are skipped.

    Unless `parse`, a line is yielded unparsed, with the id its bytes seem to hold: a store
    that sees from the bytes that nothing changed never pays for the parse (most of a day).
    """
    empty = True
    # A line is read up to MAX_RECORD_BYTES: a file with no line breaks is not read whole.
    for number, line in enumerate(iter(lambda: stream.readline(MAX_RECORD_BYTES + 2), b""),
                                  start=1):
        if number == 1:
            line = line.removeprefix(_BOM)
        if len(line.rstrip(b"\r\n")) > MAX_RECORD_BYTES:  # the line's end is no part of it
            while line and not line.endswith(b"\n"):  # the rest of it, a piece at a time
                line = stream.readline(_LINE_BUFFER)
            yield SourceItem(f"{label}:{number}",
                             error=f"a record is larger than {MAX_RECORD_BYTES} bytes")
            empty = False
            continue
        if not line or line.isspace():  # not strip(): it copies the line to test it
            continue
        empty = False
        peeked = None if parse else DEFAULT.peek_id(line)
        item = SourceItem(f"{label}:{number}", nct_id=peeked, raw=line)
        yield item if not parse else parsed(item)
    if empty:  # a download cut to nothing is not "0 studies checked"
        yield SourceItem(label, error="no studies in this file (it is empty)")


# What reading a damaged member raises: a bad CRC, a broken deflate stream, a cut-off file, an
# unsupported compression method, an encrypted member.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


def is_apple_double(name: str) -> bool:
    """Tell whether a file is macOS's metadata beside a file (`._x.json`, `__MACOSX/`), not one."""
    return name.startswith("__MACOSX/") or name.rsplit("/", 1)[-1].startswith("._")


def _read_zip(path: Path, parse: bool) -> Iterator[SourceItem]:
    """Yield the records of every JSON or NDJSON member of a zip (the registry's bulk dump)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        yield SourceItem(shown_path(path), error=f"not a readable zip: {exc}")
        return
    with archive:
        members = [info for info in sorted(archive.infolist(), key=lambda i: i.filename)
                   if not info.is_dir() and info.filename.lower().endswith(RECORD_SUFFIXES)
                   and not is_apple_double(info.filename)]
        if not members:  # as an empty folder: most often the wrong file, not "0 checked"
            yield SourceItem(shown_path(path), error="no study files in this zip (.json, .ndjson "
                                                "or .jsonl)")
        for info in members:
            name = info.filename
            label = f"{shown_path(path)}!{name}"
            try:
                # Opened by its entry, not its name: two members of one name are two inputs.
                if name.lower().endswith(".json"):
                    yield from _read_json(label, lambda i=info: archive.open(i), info.file_size)
                else:
                    with archive.open(info) as stream:
                        yield from _read_ndjson(label, stream, parse)
            except _DAMAGED as exc:  # this member fails; the others are still read
                yield SourceItem(label, error=f"a damaged zip member: {exc}")


def read_file(path: Path, parse: bool = True) -> Iterator[SourceItem]:
    """Yield the records of one file, by its kind (NDJSON lines unparsed unless `parse`)."""
    name, label = path.name.lower(), shown_path(path)
    gzipped = name.endswith(".gz")
    try:
        if name.endswith(".zip"):
            yield from _read_zip(path, parse)
        elif name.removesuffix(".gz").endswith((".ndjson", ".jsonl")):
            with (gzip.open(path) if gzipped else path.open("rb", buffering=_LINE_BUFFER)
                  ) as stream:
                yield from _read_ndjson(label, stream, parse)
        elif gzipped:
            with gzip.open(path) as stream:  # its size is known only once it is read
                data = stream.read(WHOLE_FILE_LIMIT + 1)
            if len(data) > WHOLE_FILE_LIMIT:
                data = b""  # not held while the stream is read
                yield from _read_json(label, partial(gzip.open, path), WHOLE_FILE_LIMIT + 1)
            else:
                yield from _read_json(label, lambda: io.BytesIO(data), len(data))
        else:
            yield from _read_json(label, lambda: path.open("rb"), path.stat().st_size)
    except gzip.BadGzipFile as exc:
        yield SourceItem(label, error=f"not a readable gzip file: {exc}")
    except (EOFError, zlib.error) as exc:  # the records before the damage are stored
        yield SourceItem(label, error=f"a damaged gzip file: {exc}")
    except OSError as exc:
        yield SourceItem(label, error=f"cannot read: {exc.strerror or exc}")


def shown_path(path: Path | str) -> str:
    """Return a path as a label, a file name's bytes that are not UTF-8 written as \\xNN."""
    # Such a name reaches Python as lone surrogates, which neither SQLite (the input ledger)
    # nor a UTF-8 stdout can take: one such file stopped the whole import.
    return os.fsencode(path).decode("utf-8", "backslashreplace")
