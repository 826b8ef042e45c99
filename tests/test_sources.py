"""Every input shape is read, streaming, and each broken input is named with its reason."""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from pathlib import Path

import pytest
from conftest import FIXTURES, real_records

import trialdiff.sources as sources
from trialdiff.folders import read_studies

RECORDS = real_records()[:5]
IDS = [r["protocolSection"]["identificationModule"]["nctId"] for r in RECORDS]


def ids(paths: list[Path]) -> list[str | None]:
    """Return the NCT ids (None for errors) read from paths."""
    return [item.nct_id for item in read_studies([str(p) for p in paths])]


def test_one_study_per_file(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps(RECORDS[0]))
    assert ids([path]) == IDS[:1]


def test_api_page_and_list(tmp_path: Path) -> None:
    page = tmp_path / "page.json"
    page.write_text(json.dumps({"studies": RECORDS, "nextPageToken": "abc"}))
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(RECORDS))
    assert ids([page]) == IDS
    assert ids([listed]) == IDS


def test_real_api_page_response_is_read() -> None:
    # A real /api/v2/studies page, as saved by a peer project (see fixtures/README.md).
    assert ids([FIXTURES / "history" / "NCT04280705_v0.json"]) == [None]  # a history envelope


def test_ndjson_and_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "dump.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n{broken\n")
    items = list(read_studies([str(path)]))
    assert [i.nct_id for i in items] == [*IDS, None]
    assert items[-1].label.endswith(":7") and "not valid JSON" in (items[-1].error or "")


def test_zip_bulk_dump_with_one_json_per_study(tmp_path: Path) -> None:
    path = tmp_path / "ctg-studies.json.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for record in RECORDS:
            name = record["protocolSection"]["identificationModule"]["nctId"]
            archive.writestr(f"{name}.json", json.dumps(record))
        archive.writestr("README.txt", "not a study")
    assert ids([path]) == sorted(IDS)


@pytest.mark.parametrize("whole_limit", [64 * 1024 * 1024, 100])  # read whole, and streamed
def test_gzipped_json_ndjson_and_jsonl_are_read_in_folders_too(
    tmp_path: Path, monkeypatch, whole_limit: int
) -> None:
    # A folder of .ndjson.gz was skipped without a word: "0 studies checked", exit 1.
    monkeypatch.setattr(sources, "WHOLE_FILE_LIMIT", whole_limit)
    folder = tmp_path / "dump"
    folder.mkdir()
    (folder / "a.json.gz").write_bytes(gzip.compress(json.dumps(RECORDS[:2]).encode()))
    (folder / "b.ndjson.gz").write_bytes(
        gzip.compress("\n".join(json.dumps(r) for r in RECORDS[2:4]).encode()))
    (folder / "c.JSONL.GZ").write_bytes(gzip.compress(json.dumps(RECORDS[4]).encode()))
    items = list(read_studies([str(folder)]))
    assert [(i.nct_id, i.error) for i in items] == [(n, None) for n in IDS]
    assert items[4].label == f"{folder / 'c.JSONL.GZ'}:1"


def test_a_damaged_or_misnamed_gzip_file_is_named_and_the_records_before_stored(
    tmp_path: Path
) -> None:
    lines = "\n".join(json.dumps(r) for r in RECORDS).encode()
    (tmp_path / "cut.ndjson.gz").write_bytes(gzip.compress(lines)[:-200])  # a stopped download
    (tmp_path / "plain.json.gz").write_text(json.dumps(RECORDS[0]))
    (tmp_path / "hidden.json").write_bytes(gzip.compress(json.dumps(RECORDS[0]).encode()))
    items = list(read_studies([str(tmp_path / name) for name in
                               ("cut.ndjson.gz", "plain.json.gz", "hidden.json")]))
    assert [i.nct_id for i in items[:-3]] == IDS[:4]  # the lines before the cut
    cut, plain, hidden = (i.error or "" for i in items[-3:])
    assert cut.startswith("a damaged gzip file: Compressed file ended"), cut
    assert plain.startswith("not a readable gzip file: Not a gzipped file"), plain
    assert hidden == ("gzip-compressed, but not named so: name it .json.gz, .ndjson.gz or "
                      ".jsonl.gz")


def test_macos_metadata_beside_study_files_is_no_input(tmp_path: Path) -> None:
    # A zip made on macOS, and a folder copied from one, failed on every `._` file: exit 1.
    path = tmp_path / "mac.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("studies/a.json", json.dumps(RECORDS[0]))
        archive.writestr("__MACOSX/studies/._a.json", b"\x00\x05\x16\x07 AppleDouble")
        archive.writestr("studies/._a.json", b"\x00\x05\x16\x07 AppleDouble")
    folder = tmp_path / "copied"
    (folder / "__MACOSX").mkdir(parents=True)
    (folder / "a.json").write_text(json.dumps(RECORDS[1]))
    (folder / "._a.json").write_bytes(b"\x00\x05\x16\x07")
    (folder / "__MACOSX" / "b.json").write_bytes(b"\x00")
    items = list(read_studies([str(path), str(folder)]))
    assert [(i.nct_id, i.error) for i in items] == [(IDS[0], None), (IDS[1], None)]


def test_two_zip_members_of_one_name_are_both_read(tmp_path: Path) -> None:
    # A probe's zip held study.json twice: only the last was read, the first never seen.
    path = tmp_path / "twice.zip"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("study.json", json.dumps(RECORDS[0]))
        archive.writestr("study.json", json.dumps(RECORDS[1]))
    assert ids([path]) == [IDS[0], IDS[1]]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"protocolSection": {"identificationModule"', "not valid JSON"),
        (b'{"hello": "world"}', "not a study"),
        (bytes(range(256)) * 4, "not"),
        ('{"a": "caf\u00e9"}'.encode("latin-1"), "not UTF-8"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deep"),
        (b"", "not valid JSON"),
    ],
)
def test_broken_files_are_named_with_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(RECORDS[0]))
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    items = list(read_studies([str(bad), str(good)]))
    assert items[-1].nct_id == IDS[0]
    assert all(i.error and reason in i.error for i in items[:-1])
    assert items[0].label.startswith(str(bad))


def test_large_files_stream_record_by_record(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "WHOLE_FILE_LIMIT", 100)
    monkeypatch.setattr(sources, "_CHUNK", 997)  # records straddle chunk edges
    page = tmp_path / "page.json"
    page.write_text(json.dumps({"nextPageToken": "x", "studies": RECORDS, "totalCount": 5},
                               indent=2))
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([*RECORDS, {"not": "a study"}]))
    assert ids([page]) == IDS
    items = list(read_studies([str(listed)]))
    assert [i.nct_id for i in items] == [*IDS, None]
    assert items[0].study == RECORDS[0]


@pytest.mark.parametrize(("shape", "reason"), [
    ("cut list", "the file ends where a value should follow: it is cut short"),
    ("cut page", "ends after item 2, with no closing ']': it is cut short"),
    ("no commas", "expected ',' or ']' after item 0"),
    ("tail", "extra data after the JSON value"),
])
def test_a_large_file_cut_short_or_malformed_is_a_failed_input(
    tmp_path: Path, monkeypatch, shape: str, reason: str
) -> None:
    # A probe's 84 MB list cut at a record's end (no closing bracket) was read as complete,
    # exit 0, where the same cut in a small file fails: a cut download read as a shorter day.
    monkeypatch.setattr(sources, "WHOLE_FILE_LIMIT", 100)
    monkeypatch.setattr(sources, "_CHUNK", 997)
    records = [json.dumps(r) for r in RECORDS[:3]]
    text = {"cut list": "[" + ",\n".join(records) + ",\n",
            "cut page": '{"studies": [' + ",".join(records),
            "no commas": "[" + "\n".join(records) + "]",
            "tail": "[" + ",".join(records) + "] trailing"}[shape]
    (tmp_path / "big.json").write_text(text)
    items = list(read_studies([str(tmp_path / "big.json")]))
    assert items[-1].error is not None and reason in items[-1].error, items[-1].error
    assert all(i.error is None for i in items[:-1])  # what came before the damage is read


def test_one_huge_string_is_an_error_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "WHOLE_FILE_LIMIT", 1000)
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 100_000)
    path = tmp_path / "huge.json"
    path.write_text('["' + "x" * 300_000 + '"]')
    (item,) = read_studies([str(path)])
    assert item.error and "larger than" in item.error


def test_a_utf8_byte_order_mark_is_accepted_in_every_shape(tmp_path: Path, monkeypatch) -> None:
    bom = b"\xef\xbb\xbf"
    one = tmp_path / "one.json"
    one.write_bytes(bom + json.dumps(RECORDS[0]).encode())
    page = tmp_path / "page.json"
    page.write_bytes(bom + json.dumps({"studies": RECORDS}).encode())
    lines = tmp_path / "lines.ndjson"
    lines.write_bytes(bom + b"\n".join(json.dumps(r).encode() for r in RECORDS))
    dump = tmp_path / "dump.zip"
    with zipfile.ZipFile(dump, "w") as archive:
        archive.writestr("NCT.json", bom + json.dumps(RECORDS[1]).encode())
    items = list(read_studies([str(one), str(page), str(lines), str(dump)]))
    assert [i.nct_id for i in items] == [IDS[0], *IDS, *IDS, IDS[1]]
    assert items[0].study == RECORDS[0] and items[0].raw is not None
    assert not items[0].raw.startswith(bom)  # the gate hashes the record, not the mark
    monkeypatch.setattr(sources, "WHOLE_FILE_LIMIT", 100)  # large files stream
    monkeypatch.setattr(sources, "_CHUNK", 997)
    streamed = list(read_studies([str(page), str(one)]))
    assert [i.nct_id for i in streamed] == [*IDS, None]  # one large lone study is no page
    assert streamed[0].study == RECORDS[0]


def test_a_zip_with_no_study_files_is_named_as_a_failed_input(tmp_path: Path) -> None:
    # As an empty folder is: most often the wrong file, not a day with nothing in it.
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as archive:
        archive.writestr("README.txt", "not a study")
    zipfile.ZipFile(tmp_path / "empty.zip", "w").close()
    items = list(read_studies([str(tmp_path / "notes.zip"), str(tmp_path / "empty.zip")]))
    assert [(i.label, i.error) for i in items] == [
        (str(tmp_path / p), "no study files in this zip (.json, .ndjson or .jsonl)")
        for p in ("notes.zip", "empty.zip")
    ]


def test_a_file_name_that_is_not_utf8_is_shown_escaped_and_read(tmp_path: Path) -> None:
    # Such a name reaches Python as lone surrogates, which SQLite and stdout refuse: one such
    # file once stopped a whole import.
    record = (FIXTURES / "v2" / "NCT00000410.json").read_bytes()
    folder = os.fsencode(tmp_path)
    for name, data in ((b"\xff\xfe.json", record), (b"caf\xe9.json", b"{not json")):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)
    items = list(read_studies([str(tmp_path)]))
    assert [(i.label, i.nct_id, i.error is None) for i in items] == [
        (f"{tmp_path}/caf\\xe9.json", None, False),
        (f"{tmp_path}/\\xff\\xfe.json", "NCT00000410", True),
    ]
    for item in items:
        item.label.encode("utf-8")  # no lone surrogate left


def test_a_lazy_record_is_parsed_once_and_only_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import orjson

    record = real_records()[0]
    raw = orjson.dumps(record)
    calls: list[int] = []
    loads = orjson.loads

    def counted(data: bytes) -> object:
        calls.append(len(data))
        return loads(data)

    lazy = sources.LazyRecord(raw)
    monkeypatch.setattr(sources.orjson, "loads", counted)
    assert calls == []  # made, not read: not parsed
    assert dict(lazy) == record and len(lazy) == len(record) and list(lazy) == list(record)
    assert lazy["protocolSection"] == record["protocolSection"]
    assert calls == [len(raw)]  # parsed once, for every read


@pytest.mark.parametrize("member", ["a.json", "a.ndjson"])
def test_a_damaged_zip_member_fails_alone(tmp_path: Path, member: str) -> None:
    path = tmp_path / "dump.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, "\n".join(json.dumps(r) for r in RECORDS[:3]) if
                         member.endswith("ndjson") else json.dumps(RECORDS[0]))
        archive.writestr("b.json", json.dumps(RECORDS[4]))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    start = info.header_offset + 30 + len(member.encode()) + len(info.extra)
    data[start + 20:start + 30] = bytes(10)  # the deflate stream broken, as on a bad disk
    path.write_bytes(bytes(data))
    items = list(read_studies([str(path)], parse=True))
    failed = [item for item in items if item.error is not None]
    assert len(failed) == 1 and failed[0].label.startswith(f"{path}!{member}")
    assert failed[0].error is not None and failed[0].error.startswith("a damaged zip member: ")
    assert items[-1].nct_id == IDS[4]  # the member after it is read


def test_an_ndjson_line_past_the_record_limit_fails_alone_and_is_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file with no line breaks (a corrupt download) was read into memory whole: 950 MB for
    # a 300 MB line, then called "not a study".
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 100_000)
    path = tmp_path / "day.ndjson"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + '{"x":"' + "a" * 300_000 + '"}\n'
                    + json.dumps(RECORDS[1]) + "\n")
    items = list(read_studies([str(path)]))
    assert [(i.label, i.nct_id, i.error) for i in items] == [
        (f"{path}:1", IDS[0], None),
        (f"{path}:2", None, "a record is larger than 100000 bytes"),
        (f"{path}:3", IDS[1], None)]
    exact = tmp_path / "exact.ndjson"  # exactly the limit, and a CRLF: its end is no part of it
    exact.write_bytes(b'{"x":"' + b"a" * (100_000 - 8) + b'"}\r\n')
    (item,) = read_studies([str(exact)])
    assert item.error is not None and "larger than" not in item.error


def test_an_empty_ndjson_file_or_member_is_a_failed_input(tmp_path: Path) -> None:
    # A download cut to nothing said "0 studies checked", exit 0; an empty .json already failed.
    empty = tmp_path / "empty.ndjson"
    empty.write_text("\n \n")
    bundle = tmp_path / "bulk.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("a.ndjson", "")
        archive.writestr("B.JSON", json.dumps(RECORDS[1]))  # upper case, as a folder reads it
    items = list(read_studies([str(empty), str(bundle)]))
    assert [(i.label, i.error) for i in items if i.error] == [
        (str(empty), "no studies in this file (it is empty)"),
        (f"{bundle}!a.ndjson", "no studies in this file (it is empty)")]
    assert [i.nct_id for i in items if not i.error] == [IDS[1]]


def test_a_large_file_reads_numbers_as_a_small_one_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streamed (past WHOLE_FILE_LIMIT) by Python's parser, NaN was taken as absent and a 31-digit
    # count kept whole, where orjson refuses the one and reads the other as a double.
    monkeypatch.setattr(sources, "WHOLE_FILE_LIMIT", 1000)
    record = json.loads(json.dumps(RECORDS[0]))
    record["protocolSection"].setdefault("designModule", {})["enrollmentInfo"] = {
        "count": 10**30}
    for name, text in (("big", json.dumps([record])), ("nan", '[{"protocolSection": NaN}]')):
        (tmp_path / f"{name}.json").write_text(text + " " * 2000)
        (tmp_path / f"small-{name}.json").write_text(text)
    for name in ("big", "nan"):
        streamed = list(read_studies([str(tmp_path / f"{name}.json")]))
        whole = list(read_studies([str(tmp_path / f"small-{name}.json")]))
        assert [(i.study, i.error is None) for i in streamed] == [
            (i.study, i.error is None) for i in whole], name
    (item,) = read_studies([str(tmp_path / "big.json")])
    assert item.study["protocolSection"]["designModule"]["enrollmentInfo"]["count"] == 1e30
