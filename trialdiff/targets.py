"""Where alerts go, kept out of the database: target URLs and secrets by reference only.

The database is meant to be shared (exports, the web view), and Apprise URLs carry passwords
and tokens, so it holds only references:

- `env:NAME`: read from the environment variable NAME when an alert is delivered;
- `config:ID`: a value kept in the secrets file, a JSON object {ID: value} that trialdiff
  creates with mode 0600 (folder 0700): `TRIALDIFF_SECRETS`, or else
  `$XDG_CONFIG_HOME/trialdiff/secrets.json` (`~/.config/trialdiff/secrets.json`). Beside each
  entry, `database:ID` names the database that added it, so that removing a watch from a copy
  of that database leaves the entry to the original.

Anything shown to a person (`watch list`, errors, the run log) shows a target redacted to its
scheme and host.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from .errors import UsageError
from .settings import xdg_folder

ENV_PREFIX = "env:"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CONFIG_PREFIX = "config:"
OWNER_PREFIX = "database:"  # the secrets file's key for the database that added an entry
HTTP_SCHEMES = ("http://", "https://")  # a webhook; any other scheme goes through Apprise


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def given_target(target: str) -> str:
    """Return a target as given, less the blanks around it and with its scheme in lower case.

    Schemes are case-blind (RFC 3986): `HTTP://host` is a webhook, not an Apprise URL.
    """
    target = target.strip()
    scheme = _SCHEME.match(target)
    return target if scheme is None else scheme[0].lower() + target[scheme.end():]


def secrets_path() -> Path:
    """Return the secrets file's path (TRIALDIFF_SECRETS, else the XDG config folder)."""
    explicit = os.environ.get("TRIALDIFF_SECRETS")
    if explicit:
        return Path(explicit)
    # As the database's default: an empty or relative HOME put it at / or in the cwd.
    return xdg_folder(os.environ, "XDG_CONFIG_HOME", ".config") / "trialdiff" / "secrets.json"


def _read(path: Path) -> dict[str, str]:
    """Return the secrets file's entries ({} when it does not exist)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # no such file (under a file, none can be)
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the secrets file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"the secrets file {path} is not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


@contextmanager
def _changing(path: Path) -> Iterator[None]:
    """Hold the secrets file's lock while it is read, changed and replaced.

    Every database of a user shares the file: two `watch add` at once each replaced it with
    only their own entry added, and the other's watch named a target the file did not hold.
    """
    fd = None
    with suppress(OSError):  # a folder this user cannot write: the write says so
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when closed, or when the process dies
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _write(path: Path, entries: dict[str, str]) -> None:
    """Write the secrets file atomically, readable by its owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".secrets-")  # mkstemp makes it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def keep(value: str) -> str:
    """Return the reference to store for a target or secret; keep its value in the file."""
    return keep_all([value])[0]


def _owner_key(entry_id: str) -> str:
    """Return the key under which the secrets file names the database that added an entry."""
    return f"{OWNER_PREFIX}{entry_id}"


def keep_all(values: list[str], owner: str | None = None) -> list[str]:
    """Return the references to store for targets and secrets, kept in one write of the file.

    Every env: reference is checked and the file read before anything is written, so a value
    refused leaves no other behind. `owner` (a database's path) is noted beside each entry.
    """
    for value in values:
        # A name no shell can set (`env:1BAD`, `env:A B`) would fail every delivery.
        if value.startswith(ENV_PREFIX) and not _ENV_NAME.fullmatch(value[len(ENV_PREFIX):]):
            raise UsageError(f"{value!r} names no environment variable: give env:NAME, NAME "
                             "of letters, digits and _, not starting with a digit (e.g. "
                             "env:TRIALDIFF_SLACK_URL)")
    if all(value.startswith(ENV_PREFIX) for value in values):
        return list(values)
    path = secrets_path()
    with _changing(path):
        entries = _read(path)
        references = []
        for value in values:
            reference = value if value.startswith(ENV_PREFIX) else (
                CONFIG_PREFIX + secrets.token_hex(8))
            if reference != value:
                entries[reference[len(CONFIG_PREFIX):]] = value
                if owner is not None:
                    entries[_owner_key(reference[len(CONFIG_PREFIX):])] = os.path.realpath(owner)
            references.append(reference)
        try:
            _write(path, entries)
        except OSError as exc:  # cron's user may have no home it can write: say where instead
            raise UsageError(f"cannot write the secrets file {path}: {exc.strerror or exc}; "
                             "keep it elsewhere, or give the value as env:NAME",
                             setting="secrets") from exc
    return references


def forget(references: list[str], owner: str | None = None) -> list[str]:
    """Drop the values of references from the secrets file (env: ones need nothing).

    An entry another database added (a copy of `owner` shares its references) stays: its
    references are returned. `forget([])` only reads the file: a removal that must update it
    checks so first.
    """
    ids = {r[len(CONFIG_PREFIX):] for r in references if r.startswith(CONFIG_PREFIX)}
    path = secrets_path()
    with _changing(path) if ids else nullcontext():  # forget([]) only reads
        entries = _read(path)
        mine = os.path.realpath(owner) if owner is not None else None
        kept = sorted(i for i in ids & entries.keys() if mine is not None
                      and entries.get(_owner_key(i), mine) != mine)
        gone = (ids & entries.keys()) - set(kept)
        if gone:
            _write(path, {k: v for k, v in entries.items()
                          if k not in gone and k.removeprefix(OWNER_PREFIX) not in gone})
    return [CONFIG_PREFIX + i for i in kept]


def resolve(reference: str) -> str:
    """Return the value a reference stands for, read now; UsageError when it is missing."""
    if reference.startswith(ENV_PREFIX):
        name = reference[len(ENV_PREFIX):]
        value = os.environ.get(name)
        if not value:
            raise UsageError(f"environment variable {name} is not set")
        return given_target(value)  # read at delivery, so tidied here, as `watch add` does
    if reference.startswith(CONFIG_PREFIX):
        entries = _read(secrets_path())
        found = entries.get(reference[len(CONFIG_PREFIX):])
        if found is None:
            raise UsageError(f"{reference} is not in the secrets file {secrets_path()}")
        return found
    raise UsageError(f"{reference!r} is not a target reference (env:NAME or config:ID)")


def names_host(url: str) -> bool:
    """Tell whether a URL parses (a port that is a number, brackets that close) with a host.

    Whitespace is no part of a URL (a space is `%20`): `exa mple.org` names no host.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError when the port is not a port)
    except ValueError:
        return False
    return bool(parts.hostname) and not any(char.isspace() for char in url)


def redact(target: str) -> str:
    """Return a target as it may be shown: its scheme, host and port only."""
    if target.startswith((ENV_PREFIX, CONFIG_PREFIX)):
        return target
    try:
        parts = urlsplit(target)
        scheme, host = parts.scheme, parts.hostname or ""
    except ValueError:  # e.g. an unbalanced "[": show the scheme alone
        scheme, host = (target.partition("://")[0] if "://" in target else ""), ""
    # Apprise puts tokens where a host goes (slack://TOKEN/...); show only what looks like one.
    looks_like_host = "." in host or host in ("localhost", "") or ":" in host
    if scheme not in ("http", "https") and not looks_like_host:
        return f"{scheme or '?'}://\u2026"
    try:  # the port tells apart two receivers on one host
        port = f":{parts.port}" if host and parts.port else ""
    except ValueError:  # not a number: a token's piece
        port = ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    return f"{scheme or '?'}://{host}{port}"


def shown(reference: str) -> str:
    """Return a reference as `watch list` shows it: env:NAME, or the redacted value it holds."""
    if reference.startswith(ENV_PREFIX):
        return reference
    # A secrets file that cannot be read raises (UsageError): it is not a missing entry.
    found = (_read(secrets_path()).get(reference[len(CONFIG_PREFIX):])
             if reference.startswith(CONFIG_PREFIX) else None)
    return redact(found) if found is not None else f"{reference} (missing from the secrets file)"


def scrub(text: str, values: list[str]) -> str:
    """Return text with every target or secret in it replaced by its redacted form."""
    for value in sorted(values, key=len, reverse=True):
        if not value:
            continue
        if "://" not in value:  # a signing secret: nothing of it may show
            text = text.replace(value, "\u2026")
            continue
        text = text.replace(value, redact(value))
        try:
            parts = urlsplit(value)
        except ValueError:  # an unbalanced "[": it raised inside a delivery pass, stopping it
            continue
        userinfo = parts.netloc.rpartition("@")[0]
        if userinfo:
            text = text.replace(userinfo, "\u2026")
        for piece in sorted(_secret_parts(value, parts), key=len, reverse=True):
            text = re.sub(rf"(?<![\w-]){re.escape(piece)}(?![\w-])", "\u2026", text)
    return text


def _secret_parts(value: str, parts: SplitResult) -> set[str]:
    """Return the parts of a target URL a service's error may name that may be its secret."""
    # An Apprise URL is tokens (an ntfy topic, a Slack token: in its path, or where a host
    # goes, as redact() hides it); a webhook's path is mostly words (/api/hooks), and only a
    # part that looks like a token (digits, mixed case, or long) is taken for one.
    pieces = {unquote(p) for p in parts.path.split("/")} | {v for _, v in parse_qsl(parts.query)}
    if not value.startswith(HTTP_SCHEMES):
        if redact(value).endswith("\u2026"):
            pieces.add(unquote(parts.netloc.rpartition("@")[2]))
        return {p for p in pieces if len(p) >= 3}
    return {p for p in pieces if len(p) >= 16 or (len(p) >= 6 and (
        any(c.isdigit() for c in p) or (p.lower() != p and p.upper() != p)))}
