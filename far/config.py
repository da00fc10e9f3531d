"""The config layer: every settings structure of far is a frozen dataclass built from a
plain mapping (a YAML section) by one constructor, :func:`from_mapping`.

What every config gets from it:

* **one error format**, ``<file>: <dotted.field>: <problem>`` (:class:`ConfigError`;
  the file part is added by whoever read the file, :meth:`ConfigError.in_file`);
* **unknown keys refused**, the message listing the known ones;
* **values checked against the annotations**: ints where ints are expected (``true`` is
  not a number), ints accepted for floats, YAML lists turned into tuples, YAML 1.1's
  ``1e-3`` (a string to PyYAML) read as a number, nested dataclasses built recursively
  with their field names prefixed;
* **cross-field rules** in the dataclass's own ``__post_init__``, raising
  :func:`fail` with field names relative to the dataclass; they run on every
  construction, also from Python.

This module imports no torch (nor anything heavy), so the pipeline can validate every
config at parse time.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Mapping, NoReturn, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem: ``field`` (dotted, relative to what was being built), the
    ``problem``, and the ``source`` file once known."""

    def __init__(self, field: str, problem: str, source: str | None = None):
        self.field, self.problem, self.source = field, problem, source
        where = f"{field}: " if field else ""
        super().__init__(f"{source}: {where}{problem}" if source else f"{where}{problem}")

    def under(self, prefix: str) -> "ConfigError":
        """The same error one level down: ``lr`` under ``optim`` is ``optim.lr``."""
        if not prefix:
            return self
        return ConfigError(f"{prefix}.{self.field}" if self.field else prefix, self.problem, self.source)

    def in_file(self, source: str | Path) -> "ConfigError":
        """The same error, located in the file ``source``."""
        return ConfigError(self.field, self.problem, str(source))


def fail(field: str, problem: str) -> NoReturn:
    """Raise :class:`ConfigError` for ``field`` (relative to the config being built)."""
    raise ConfigError(field, problem)


def check_choice(field: str, value: Any, choices: typing.Sequence[Any]) -> None:
    """Refuse ``value`` unless it is one of ``choices``, listing them."""
    if value not in choices:
        fail(field, f"{value!r} is not one of {', '.join(map(str, choices))}")


def from_mapping(cls: type[T], values: Any, field: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, checking keys and value types.

    ``field`` is where the mapping sits in a larger config (``optim``); error field names
    are prefixed with it. Missing keys take the dataclass defaults; a field without a
    default is required.
    """
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(field, f"expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise ConfigError(_join(field, unknown[0]), f"unknown key (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = coerce(hints[name], values[name], _join(field, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(field, name), "required")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.under(field) from None


def coerce(tp: Any, v: Any, field: str) -> Any:
    """``v`` checked against the annotation ``tp`` (see the module docstring)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None:
            if type(None) in args:
                return None
            raise ConfigError(field, "must not be null")
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(a, v, field)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(field, f"expected {' or '.join(_name(a) for a in args if a is not type(None))}, got {v!r}")
    if v is None:
        raise ConfigError(field, "must not be null")
    if tp is Any:
        return v
    if dataclasses.is_dataclass(tp):
        return from_mapping(tp, v, field)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(field, f"expected true/false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(field, f"expected an integer, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise ConfigError(field, f"expected a number, got {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(field, f"expected a finite number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(field, f"expected a string, got {v!r}")
        return v
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {v!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            if not v:
                raise ConfigError(field, "expected a non-empty list")
            return tuple(coerce(args[0], x, f"{field}[{i}]") for i, x in enumerate(v))
        if len(v) != len(args):
            raise ConfigError(field, f"expected a list of {len(args)}, got {v!r}")
        return tuple(coerce(a, x, f"{field}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
    if origin is dict or tp is dict:
        if not isinstance(v, Mapping):
            raise ConfigError(field, f"expected a mapping, got {v!r}")
        return dict(v)
    raise ConfigError(field, f"unsupported annotation {tp}")  # pragma: no cover - a schema bug


def to_plain(x: Any) -> Any:
    """A dataclass (or nested values) as plain YAML-safe data: tuples become lists."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        x = dataclasses.asdict(x)
    if isinstance(x, Mapping):
        return {k: to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_plain(v) for v in x]
    return x


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping; a missing, unreadable or non-mapping file is a
    :class:`ConfigError` located in that file."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError("", f"cannot read the file ({err.strerror or err})", str(path)) from None
    except yaml.YAMLError as err:
        raise ConfigError("", f"not valid YAML ({err})", str(path)) from None
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError("", f"expected a mapping at the top level, got {type(values).__name__}", str(path))
    return dict(values)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))
