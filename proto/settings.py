"""Configuration files as typed models: one convention for every TOML file the project reads.

Each deployable describes its file with pydantic models built on ``Settings`` (strict types, no
unknown keys). ``validate`` turns pydantic's report into one error naming the dotted key, as
operators write it (``sources.modbus[0].port``), with a did-you-mean for a misspelt key;
``reference`` writes the annotated example TOML the README's configuration reference shows,
from the same models, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import difflib
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

ErrorFactory = Callable[[str, str], Exception]  # (dotted key, problem) -> the caller's error
M = TypeVar("M", bound=BaseModel)
# pydantic's error types that a range or a list of choices explains better than its message.
RANGE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "literal_error",
}


class Settings(BaseModel):
    """A table of a configuration file: typed as TOML writes it, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)


def _from_base(value: Path, info: ValidationInfo) -> Path:
    """A relative path is taken from the configuration file's folder."""
    base = (info.context or {}).get("base")
    return base / value if base is not None else value


# A file named in a configuration file: a string in TOML, relative to the file's folder.
FilePath = Annotated[Path, Field(strict=False), AfterValidator(_from_base)]
MAX_PORT = 65_535


def _address(value: str) -> str:
    """host:port, the host an IPv4 address or a name (gRPC and the metrics servers bind it)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
        raise ValueError("must be host:port")
    if host.startswith("["):
        raise ValueError("must be an IPv4 address or host name with a port")
    return value


# Where a server listens: host:port.
Address = Annotated[str, AfterValidator(_address)]


def unique_by(attribute: str) -> AfterValidator:
    """For a list of tables whose ``attribute`` must differ (names, topics): the first repeat.

    Used as ``Annotated[list[Table], unique_by("name")]``; the error names the list's key.
    """

    def check(values: list[Any]) -> list[Any]:
        seen = [getattr(v, attribute) for v in values]
        if repeated := next((v for v in seen if seen.count(v) > 1), None):
            raise ValueError(f"{attribute} {repeated!r} appears twice")
        return values

    return AfterValidator(check)


class MetricsSection(Settings):
    """Optional: a Prometheus endpoint, GET http://<listen>/metrics."""

    listen: Address | None = Field(
        None, description="host:port; off when not set", examples=["127.0.0.1:9464"]
    )


def read_toml(path: Path, error: ErrorFactory) -> dict[str, Any]:
    """The parsed file; anything unreadable is ``error("file", ...)`` naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error("file", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise error("file", f"{path} is not UTF-8 text: byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error("file", f"{path} is not valid TOML: {exc}") from None


def validate(
    model: type[M], data: dict[str, Any], *, error: ErrorFactory, base: Path | None = None
) -> M:
    """``data`` as ``model``, or the first problem as ``error(dotted key, problem)``."""
    try:
        return model.model_validate(data, context={"base": base})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = tuple(first["loc"])
        raise error(dotted(loc) or "file", _problem(model, loc, first)) from None


def dotted(loc: tuple[str | int, ...]) -> str:
    """("sources", "modbus", 0, "port") -> "sources.modbus[0].port"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _problem(model: type[BaseModel], loc: tuple[str | int, ...], error: Any) -> str:  # noqa: ANN401
    """What is wrong, in the operator's words."""
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return "is not a known setting" + (f"; did you mean {close[0]!r}?" if close else "")
    field = _field_at(model, loc)
    if kind in RANGE_ERRORS and field is not None and (allowed := _constraints(field)):
        return f"must be {allowed[0]}, got {error['input']!r}"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    return f"{message}, got {error['input']!r}"


def _field_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> FieldInfo | None:
    """The field the error at ``loc`` is about, if ``loc`` ends at one."""
    names = [part for part in loc if isinstance(part, str)]
    if not names:
        return None
    current: Any = model
    for name in names[:-1]:
        fields = getattr(current, "model_fields", {})
        if name not in fields:
            return None
        current = _model_of(fields[name].annotation)
    return getattr(current, "model_fields", {}).get(names[-1])


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys the table at ``loc`` accepts."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return []
        current = _model_of(fields[part].annotation)
    return list(getattr(current, "model_fields", {}))


def _model_of(annotation: Any) -> Any:  # noqa: ANN401 - any type annotation
    """The model inside ``X``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if (found := _model_of(argument)) is not None:
            return found
    return None


def reference(model: type[BaseModel]) -> str:
    """An annotated example of the whole file: every key with its default, range and meaning.

    A key's example value is its ``examples[0]`` or else its default; a required key without
    an example is shown commented out. Tables come after the plain keys of their parent.
    """
    return "\n".join(_table_lines(model, "", array=False)).strip() + "\n"


def _table_lines(model: type[BaseModel], name: str, *, array: bool) -> list[str]:
    lines: list[str] = []
    scalars = [k for k, f in model.model_fields.items() if _model_of(f.annotation) is None]
    if name and (scalars or array):  # a table of tables only is implied by its tables' headers
        header = f"[[{name}]]" if array else f"[{name}]"
        lines += ["", _commented(header, model.__doc__ or "")]
    tables = []
    for key, field in model.model_fields.items():
        inner = _model_of(field.annotation)
        if inner is not None:
            tables.append((key, inner, _is_sequence(field.annotation)))
            continue
        lines.append(_key_line(key, field))
    for key, inner, is_array in tables:
        lines += _table_lines(inner, f"{name}.{key}" if name else key, array=is_array)
    return lines


def _is_sequence(annotation: Any) -> bool:  # noqa: ANN401
    origin = typing.get_origin(annotation)
    if origin in {types.UnionType, typing.Union}:
        return any(_is_sequence(a) for a in typing.get_args(annotation))
    return origin in {list, tuple}


def _key_line(key: str, field: FieldInfo) -> str:
    required = field.is_required()
    example = field.examples[0] if field.examples else None
    if example is None and not required:
        example = field.get_default(call_default_factory=True)  # None: optional, not set
    default = None if required else field.get_default(call_default_factory=True)
    facts = [] if default is None else [f"default {_toml(default)}"]
    facts += _constraints(field)
    text = (field.description or "").rstrip(".")
    note = "; ".join([*(["required"] if required else []), *facts])
    comment = f"{text} ({note})" if text and note else text or note
    if example is None:
        return _commented(f"# {key} = ...", comment)
    return _commented(f"{key} = {_toml(example)}", comment)


def _constraints(field: FieldInfo) -> list[str]:
    """Ranges and choices, as a reader of the example needs them."""
    low = high = None
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = getattr(item, "ge", getattr(item, "gt", None))
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = getattr(item, "le", getattr(item, "lt", None))
        if isinstance(item, annotated_types.MaxLen) and low is None:
            return [f"at most {item.max_length} characters"]
    choices = _choices(field.annotation)
    if choices:
        return [" or ".join(_toml(c) for c in choices)]
    if low is not None and high is not None:
        return [f"{_toml(low)}..{_toml(high)}"]
    return [f"at least {_toml(low)}"] if low is not None else []


def _choices(annotation: Any) -> tuple[Any, ...]:  # noqa: ANN401
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for argument in typing.get_args(annotation):
        if found := _choices(argument):
            return found
    return ()


def _toml(value: Any) -> str:  # noqa: ANN401 - any default or example
    """A value as TOML writes it (strings quoted, booleans lower case)."""
    value = to_jsonable_python(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:  # noqa: PLR2004
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if value is None or value is PydanticUndefined:
        return '""'
    return str(value)


def _commented(code: str, comment: str, width: int = 38, line: int = 100) -> str:
    """``code`` with ``# comment`` aligned and wrapped, as the README's examples are laid out."""
    comment = " ".join(comment.split())
    if not comment:
        return code
    lead = max(width, len(code) + 2)
    chunks = textwrap.wrap(comment, max(line - lead - 2, 30), break_on_hyphens=False) or [""]
    lines = [f"{code:<{lead}}# {chunks[0]}"]
    lines += [f"{'':<{lead}}# {chunk}" for chunk in chunks[1:]]
    return "\n".join(lines)
