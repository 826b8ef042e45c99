"""The exception tree errors.py documents: its hierarchy, exit codes and settings are the code's."""

from __future__ import annotations

import inspect
import re

from conftest import ROOT

from trialdiff import errors
from trialdiff.cli.sinks import SETTING_WORDS

# One line of the docstring's tree: its drawing, the class name, then what it means.
TREE_LINE = re.compile(r"^ {4}((?:[│ ]   )*)(?:[├└]── )?(\w+) +(.*)$")


def documented_tree() -> list[tuple[int, str, str]]:
    """Return the docstring's tree as (depth, class name, description) lines, top down."""
    assert errors.__doc__ is not None
    lines = []
    for line in errors.__doc__.splitlines()[2:]:
        if not line.strip():
            break
        found = TREE_LINE.match(line)
        assert found, f"not a line of the tree: {line!r}"
        drawing, name, description = found.groups()
        depth = len(drawing) // 4 + (name != "TrialdiffError")
        lines.append((depth, name, description))
    return lines


def error_classes() -> dict[str, type[errors.TrialdiffError]]:
    """Return every error class errors.py defines, by name."""
    return {name: value for name, value in vars(errors).items()
            if inspect.isclass(value) and issubclass(value, errors.TrialdiffError)}


def test_the_documented_tree_is_the_class_hierarchy() -> None:
    tree = documented_tree()
    assert [name for _, name, _ in tree] == list(error_classes())  # each once, in code order
    parents: list[str] = []  # the chain of names above the current line
    for depth, name, _ in tree:
        del parents[depth:]
        cls = error_classes()[name]
        if parents:
            assert cls.__bases__ == (error_classes()[parents[-1]],), name
        else:
            assert cls.__bases__ == (Exception,)
        parents.append(name)


def test_each_error_exits_with_the_code_its_line_states_else_its_parents() -> None:
    classes = error_classes()
    stated = 0
    for _, name, description in documented_tree():
        cls = classes[name]
        code = re.search(r"\(exit (\d+)\)", description)
        if code:
            stated += 1
            assert cls.exit_code == int(code[1]), name
        else:
            # No code on its line: it exits as the class above it does (1 at the root).
            assert cls.exit_code == getattr(cls.__bases__[0], "exit_code", 1), name
    assert stated >= 3  # usage (2), input (1) and busy (75) say theirs


def test_every_exit_code_an_error_has_is_in_the_readmes_table() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert {cls.exit_code for cls in error_classes().values()} <= documented


def test_every_setting_an_error_names_is_one_the_cli_words() -> None:
    # The library names a setting, never a flag; a setting the CLI has no words for would
    # reach the user as a bare message that does not say which option to change.
    named = set()
    for path in (ROOT / "trialdiff").rglob("*.py"):
        named |= set(re.findall(r"""setting=["'](\w+)["']""", path.read_text(encoding="utf-8")))
    assert "api" in named and named <= SETTING_WORDS.keys()
    error = errors.UsageError("bad", setting="api")
    assert (str(error), error.setting, errors.TrialdiffError("x").setting) == ("bad", "api", None)
