"""One schema for every setting: a config dataclass field carries its option, help, type and choices.

:func:`option` declares a field; :func:`add_options` makes the argparse options from the fields;
:func:`load_toml` reads a ``--config`` file against the same fields (the same checks, the same
one-line errors); :func:`build` merges defaults, the file and the command line, in that order.
The value types (``positive_int``, ``learning_rate``...) are the argparse types every command and
launcher uses. No TensorFlow here.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from dataclasses import MISSING, Field, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

# The largest count any option takes: TensorFlow seeds and step counters are 32/64-bit integers,
# and nothing in a training run needs more (2**31 - 1 epochs of MNIST is 4,000 years on a GPU).
MAX_COUNT = 2**31 - 1
MAX_REAL = 1e12  # the largest rate, threshold or duration an option takes; beyond it is a typo


class ConfigFileError(ValueError):
    """A ``--config`` file that cannot be used; one line naming the file and the key."""


# ------------------------------------------------------------------ value types
def bounded(kind: Callable[[str], float], minimum: float, inclusive: bool, what: str,
            maximum: float | None = None):
    """An argparse type: a finite number of ``kind`` in [minimum, maximum] (or (minimum, maximum])."""
    maximum = (MAX_COUNT if kind is int else MAX_REAL) if maximum is None else maximum

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive) or value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    parse.__name__ = what
    return parse


positive_int = bounded(int, 1, True, f"a positive integer up to {MAX_COUNT}")
non_negative_int = bounded(int, 0, True, f"a non-negative integer up to {MAX_COUNT}")
positive_float = bounded(float, 0.0, False, f"a positive finite number up to {MAX_REAL:g}")
non_negative_float = bounded(float, 0.0, True, f"a non-negative finite number up to {MAX_REAL:g}")
# a learning rate is a float32 in TensorFlow; an absurd but representable one is allowed (and caught
# by the divergence guard if it makes the loss non-finite)
learning_rate = bounded(float, 0.0, False, "a positive finite number up to 3.4e38 (float32)", maximum=3.4e38)


def accuracy(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an accuracy in (0, 1]")
    return value


# ------------------------------------------------------------------ declaring a setting
def option(default: Any, help: str, *, type: Callable[[str], Any] | None = None,  # noqa: A002 - argparse's name
           choices: Callable[[], tuple[str, ...]] | tuple[str, ...] | None = None, flag: str | None = None,
           group: str | None = None, cli: bool = True) -> Any:
    """A config field that is also a command-line option and a config-file key.

    ``flag``: the option's name when it is not ``--field-name`` (``--no-scale-lr`` for a boolean
    that defaults to True); ``choices``: a tuple, or a function giving it (the model registry);
    ``group``: options of one group exclude each other; ``cli=False``: a file key only.
    """
    return field(default=default, metadata={"help": help, "type": type, "choices": choices, "flag": flag,
                                            "group": group, "cli": cli})


def settings_of(cls: type, prefix: str = "") -> Iterator[tuple[str, Field]]:
    """(dotted name, field) of every setting of ``cls``, nested dataclasses flattened."""
    for f in fields(cls):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            yield from settings_of(type(default), f"{prefix}{f.name}.")
        elif "help" in f.metadata:
            yield prefix + f.name, f


def flag_of(name: str, f: Field) -> str:
    return f.metadata["flag"] or "--" + name.rsplit(".", 1)[-1].replace("_", "-")


def _choices(f: Field) -> tuple[str, ...] | None:
    choices = f.metadata["choices"]
    return choices() if callable(choices) else choices


def add_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One option per setting of ``cls``. Defaults are argparse.SUPPRESS: the namespace holds only
    what was typed, so :func:`build` can put it over a config file (the help shows the real default)."""
    groups: dict[str, Any] = {}
    for name, f in settings_of(cls):
        if not f.metadata["cli"] or name in skip:
            continue
        target = parser
        if f.metadata["group"]:
            if f.metadata["group"] not in groups:
                groups[f.metadata["group"]] = parser.add_mutually_exclusive_group()
            target = groups[f.metadata["group"]]
        shown = "" if f.default in (None, True, False) else f" (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": f.metadata["help"] + shown}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs |= {"type": f.metadata["type"], "choices": _choices(f)}
            kwargs["metavar"] = None if kwargs["choices"] else name.rsplit(".", 1)[-1].upper()
        target.add_argument(flag_of(name, f), **kwargs)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE.toml",
                        help="read settings from this TOML file (e.g. a run's RUN_DIR/config.toml); "
                             "options given on the command line override it")


def load_toml(path: Path, cls: type) -> dict[str, Any]:
    """The settings a ``--config`` file gives, checked like options; unknown keys are an error."""
    return load_table(read_toml(path, f"--config: {path}"), cls, f"--config: {path}")


def read_toml(path: Path, where: str) -> dict[str, Any]:
    """A TOML file's tables, or one line starting with ``where``: unreadable, or not TOML."""
    try:
        return tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigFileError(f"{where}: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"{where}: not TOML ({err})") from None


def load_table(table: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    """The dotted settings of ``cls`` a TOML table gives, each through its option's check; an unknown
    key or a bad value is one line starting with ``where`` (a config file, or a sweep file's table)."""
    known = dict(settings_of(cls))
    values: dict[str, Any] = {}

    def visit(table: Mapping[str, Any], prefix: str) -> None:
        for key, value in table.items():
            name = prefix + key
            if isinstance(value, dict) and any(k.startswith(name + ".") for k in known):
                visit(value, name + ".")
            elif name not in known:
                raise ConfigFileError(f"{where}: unknown setting {name!r} (allowed: {', '.join(known)})")
            else:
                values[name] = _checked(where, name, known[name], value)

    visit(table, "")
    return values


def _checked(where: str, name: str, f: Field, value: Any) -> Any:
    """A file value through the option's own check: the same message as on the command line."""
    if isinstance(f.default, bool) or isinstance(value, bool):
        if not isinstance(value, bool) or not isinstance(f.default, bool):
            raise ConfigFileError(f"{where}: {name} = {value!r} is not {'true or false' if isinstance(f.default, bool) else 'allowed'}")
        return value
    choices = _choices(f)
    if choices is not None:
        if value not in choices:
            raise ConfigFileError(f"{where}: {name} = {value!r} is not one of {', '.join(choices)}")
        return value
    kind = f.metadata["type"]
    if kind is None:
        return str(value)
    try:
        return kind(str(value))
    except argparse.ArgumentTypeError as err:
        raise ConfigFileError(f"{where}: {name}: {err}") from None


def build(cls: type, *layers: Mapping[str, Any]) -> Any:
    """``cls`` from its defaults with each layer of dotted settings put over the last (file, then command line)."""
    group_of = {name: f.metadata["group"] for name, f in settings_of(cls) if f.metadata["group"]}
    merged: dict[str, Any] = {}
    for layer in layers:
        for group in {group_of[name] for name in layer if name in group_of}:  # --steps over a file's epochs
            merged = {k: v for k, v in merged.items() if group_of.get(k) != group}
        merged |= layer
    return _construct(cls, merged, "")


def _construct(cls: type, merged: Mapping[str, Any], prefix: str) -> Any:
    values = {}
    for f in fields(cls):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            values[f.name] = _construct(type(default), merged, f"{prefix}{f.name}.")
        elif prefix + f.name in merged:
            values[f.name] = merged[prefix + f.name]
    return cls(**values)


def namespace_settings(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of ``cls`` typed on the command line (dotted names), from a namespace of :func:`add_options`."""
    known = {name for name, _ in settings_of(cls)}
    return {k: v for k, v in vars(args).items() if k in known}
