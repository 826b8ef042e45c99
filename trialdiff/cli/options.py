"""Options bound to settings, the text and number types, and the options commands share."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from ..settings import MAX_DAYS, setting


class SettingOption(click.Option):
    """An option bound to a setting: a bad value from its variable names the variable."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        """Name the option, and the variable when the value came from it (cron's way)."""
        hint = super().get_error_hint(ctx)
        if (ctx is not None and self.name
                and ctx.get_parameter_source(self.name) is ParameterSource.ENVIRONMENT):
            return f"{self.envvar} (the setting of {hint})"
        return hint


def setting_option(option: str) -> dict[str, Any]:
    """Return click keyword arguments that bind an option to its setting."""
    entry = setting(option)
    return {"cls": SettingOption, "envvar": entry.envvar, "default": entry.default,
            "show_default": entry.default != "",  # not `[default: ""]`: the help says what
            "help": f"{entry.help} [env: {entry.envvar}]"}


class Text(click.ParamType):  # type: ignore[type-arg]  # [str] fails on click 8.1
    """A text (not a path): read as UTF-8 whatever the locale, as the registry's text is."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        """Return the text its bytes spell in UTF-8, or as the locale read them if not UTF-8."""
        if not isinstance(value, str):
            return value
        # Python reads argv and the environment in the locale's encoding: a crontab written
        # in UTF-8, run under a Latin-1 locale, gave `Türkiye` as `TÃ¼rkiye`, which matches
        # nothing. A path keeps the locale's reading: it names the bytes on the disk.
        try:
            raw = os.fsencode(value)
        except UnicodeEncodeError:  # real text already (a caller's, not argv's): as it is
            return value
        with contextlib.suppress(UnicodeDecodeError):
            value = raw.decode("utf-8")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # bytes no encoding of the locale's could read
            self.fail(f"{raw!r} is not UTF-8 text, nor text in this locale's encoding "
                      "(set LANG or LC_ALL to a UTF-8 locale)", param, ctx)
        return value


TEXT = Text()


def finite(kind: type, low: float, high: float, low_open: bool = False) -> click.ParamType[Any]:
    """Return a click type for a number within [low, high]; NaN and infinity are refused."""
    if kind is int:
        return click.IntRange(int(low), int(high))

    class Finite(click.FloatRange):
        def convert(self, value: Any, param: click.Parameter | None,
                    ctx: click.Context | None) -> Any:
            number = super().convert(value, param, ctx)
            if isinstance(number, float) and math.isnan(number):
                self.fail(f"{value!r} is not a number", param, ctx)
            return number

    return Finite(low, high, min_open=low_open)


def wait_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --wait to a command that writes."""
    return click.option(
        "--wait", type=finite(float, 0, 7 * 86_400), default=0.0, metavar="SECONDS",
        help="Wait this long for another writer instead of exiting 75.",
    )(command)


def window_days_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --days, a window of days ending with --as-of's day (recent, page, watch show)."""
    return click.option(
        "--days", type=click.IntRange(1, MAX_DAYS), default=30, show_default=True,
        help="Days of the window, ending with --as-of's day.",
    )(command)


def checked_url(ctx: click.Context, option: str, check: Callable[[], object]) -> None:
    """Run a URL setting's check; its error names the variable when the value came from it."""
    from ..errors import UsageError

    try:
        check()
    except UsageError as exc:
        name = option.removeprefix("--").replace("-", "_")
        if ctx.get_parameter_source(name) is not ParameterSource.ENVIRONMENT:
            raise
        # The library's error names the setting, which the CLI words as the option.
        raise UsageError(f"{setting(option).envvar} (the setting of {option}) {exc}") from None
