"""The README's tables are the code's tables: field paths, schema, settings and commands.

Run `TRIALDIFF_UPDATE_README=1 python -m pytest tests/test_readme.py` to rewrite the generated
blocks after changing a table in the code.
"""

from __future__ import annotations

import os
import re

from click.testing import CliRunner
from conftest import ROOT

from trialdiff.cli import cli
from trialdiff.fields import FIELDS, IGNORE_LIST, LOCATIONS_SOURCE
from trialdiff.meaning import severity_rules_markdown
from trialdiff.schema import SCHEMA, VIEW_DOCS
from trialdiff.settings import SETTINGS

README = ROOT / "README.md"


def field_paths_block() -> str:
    """Return the README's table of field paths, from the registry."""
    rows = ["| # | path | source in the API v2 record | shown as |", "|---|---|---|---|"]
    for number, field in enumerate(FIELDS, start=1):
        rows.append(f"| {number} | `{field.path}` | `{field.source}` | {field.kind} |")
    rows.append(f"| {len(FIELDS) + 1} | `locations.<facility>\\|<city>\\|<state>\\|<country>` "
                f"| `{LOCATIONS_SOURCE}[i]` without `geoPoint` | value |")
    ignored = ", ".join(f"`{source}`" for source in IGNORE_LIST)
    return "\n".join(rows) + (f"\n\nIgnored by default (a database may track them again: "
                              f"`trialdiff ignored`): {ignored}.\n")


def schema_block() -> str:
    """Return the README's description of the database schema, from the schema table."""
    sql_types = {str: "TEXT", int: "INTEGER", bytes: "BLOB"}
    lines = []
    for table in SCHEMA:
        keys = [f"primary key `{table.pk}`"]
        keys += [f"unique ({', '.join(i)})" for i in table.unique]
        keys += [f"index ({', '.join(i)})" for i in table.indexes]
        lines += [f"**{table.name}** ({'; '.join(keys)})", "", "| column | type | meaning |",
                  "|---|---|---|"]
        lines += [f"| `{name}` | {sql_types[kind]} | {doc} |" for name, kind, doc in table.columns]
        lines.append("")
    lines += [f"View **{name}**: {doc}." for name, doc in VIEW_DOCS.items()]
    return "\n".join(lines) + "\n"


def settings_block() -> str:
    """Return the README's table of settings, from the settings table."""
    rows = ["| option | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        rows.append(f"| `{s.option}` | `{s.envvar}` | `{s.default}` | {s.help} |")
    return "\n".join(rows) + "\n"


BLOCKS = {
    "field-paths": field_paths_block,
    "schema": schema_block,
    "settings": settings_block,
    "severity": lambda: severity_rules_markdown() + "\n",
}


def _block(text: str, name: str) -> str:
    """Return the generated block `name` of the README."""
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, flags=re.S)
    assert match, f"README has no {name} block"
    return match.group(1)


def test_generated_blocks_match_the_code() -> None:
    text = README.read_text(encoding="utf-8")
    if os.environ.get("TRIALDIFF_UPDATE_README"):
        for name, build in BLOCKS.items():
            start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
            head, rest = text.split(start)
            text = head + start + build() + end + rest.split(end)[1]
        README.write_text(text, encoding="utf-8")
    for name, build in BLOCKS.items():
        assert _block(text, name) == build(), f"README block {name} is stale"


def test_every_command_is_documented_with_an_example() -> None:
    text = README.read_text(encoding="utf-8")
    for name in cli.commands:  # type: ignore[attr-defined]
        assert f"### `trialdiff {name}" in text, f"README lacks a section for {name}"
        help_text = CliRunner().invoke(cli, [name, "--help"]).stdout
        example = help_text.split("Example:")[1].strip().splitlines()[0].strip()
        assert example in text, f"README lacks the example of {name}: {example}"


def test_the_module_map_names_every_module() -> None:
    # A probe found the map four modules behind (`ahead`, `apprise_client`, `tracking`,
    # `upgrades`): a module added is a module described.
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z_]+)`", text.split("One module per stage, each short:", 1)[1]
                           .split("\n## ", 1)[0]))
    for package in ("trialdiff", "trialdiff/cli", "trialdiff/web"):
        modules = {p.stem for p in (ROOT / package).glob("*.py")} - {"__init__", "__main__"}
        assert modules <= named, (package, sorted(modules - named))


def test_exit_codes_are_documented() -> None:
    text = README.read_text(encoding="utf-8")
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 75 |"):
        assert code in text


def test_the_two_commands_are_what_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = ci.split("# The README's test command:\n")[1].splitlines()[0]
    assert test_command == "python3 -m pip install -e '.[test]' && python3 -m pytest"
    assert f"\n{test_command}\n" in text
    assert "\npython3 -m pip install . && trialdiff import snapshots/sample\n" in text
    assert "pip wheel --no-deps" in ci  # and the wheel is installed and run outside the checkout


def test_compacts_help_claims_the_savings_the_readme_measured() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("### `trialdiff compact")[1].split("\n### ")[0]
    measured = [
        re.search(r"the database after the first day .*? goes from\s+([\d.]+) to ([\d.]+) MB",
                  section, re.S),
        re.search(r"; ([\d.]+) MB -> ([\d.]+) MB", section),  # the example's output
    ]
    saved = [round(100 * (1 - float(m.group(2)) / float(m.group(1)))) for m in measured if m]
    assert len(saved) == 2
    shown = " ".join(CliRunner().invoke(cli, ["compact", "--help"]).stdout.split())
    claimed = re.search(r"fewer bytes \((\d+)-(\d+)% in the README's measurements\)", shown)
    assert claimed is not None, shown
    assert (int(claimed.group(1)), int(claimed.group(2))) == (min(saved), max(saved))
