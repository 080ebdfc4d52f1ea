"""Configuration files as typed models: one convention for every TOML file the project reads.

Each deployable describes its file with msgspec structs built on ``Settings`` (strict types,
no unknown keys, constraints and documentation in ``Meta``). msgspec rather than pydantic
because the edge agent carries it for its whole life on a gateway: it costs the agent about
1 MB where pydantic cost 13. ``validate`` turns msgspec's report into one error naming the
dotted key, as operators write it (``sources.modbus[0].port``), with a did-you-mean for a
misspelt key; ``reference`` writes the annotated example TOML the README's configuration
reference shows, from the same models, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import difflib
import functools
import re
import textwrap
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta
from msgspec import inspect as types

ErrorFactory = Callable[[str, str], Exception]  # (dotted key, problem) -> the caller's error
S = TypeVar("S", bound="Settings")
MAX_PORT = 65_535
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_FIELD_NAMED = re.compile(
    r"^Object (?P<what>missing required|contains unknown) field `(?P<key>.+)`$"
)
_OWN_KEY = re.compile(r"^(?P<key>\w+): (?P<problem>.+)$", re.DOTALL)
_OUT_OF_RANGE = re.compile(r"^Expected `\w+` [<>]=? |^Invalid enum value ")
_MISSING = object()


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A table of a configuration file: typed as TOML writes it, unknown keys refused.

    A check msgspec cannot express goes in ``__post_init__`` and raises ``invalid(key, ...)``,
    so the error names the key it is about. Every model says ``frozen=True`` again, for
    type checkers (msgspec issue 657), and ``kw_only=True`` where a required key follows an
    optional one (msgspec does not inherit that).
    """


def invalid(key: str, problem: str) -> ValueError:
    """The error a ``__post_init__`` raises about one of its keys (``validate`` names it).

    ``problem`` is reported as written: quote the value where it helps.
    """
    return ValueError(f"{key}: {problem}")


# A file named in a configuration file: a string in TOML, relative to the file's folder.
FilePath = Path


class Address(str):
    """Where a server listens: host:port, the host an IPv4 address or a name."""

    __slots__ = ()

    @classmethod
    def parse(cls, value: object) -> Address:
        """``value`` if it is host:port, else a ValueError saying what it must be."""
        if not isinstance(value, str):
            raise TypeError("must be host:port, a string")
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
            raise ValueError("must be host:port")
        if host.startswith("["):
            raise ValueError("must be an IPv4 address or host name with a port")
        return cls(value)


def _decode(base: Path | None, kind: type, value: object) -> object:
    """The types TOML has no word for: file names (taken from ``base``) and listen addresses."""
    if kind is Path:
        if not isinstance(value, str):
            raise TypeError("must be a file name, a string")
        return Path(value) if base is None else base / value
    if kind is Address:
        return Address.parse(value)
    raise NotImplementedError


def unique(values: Iterable[Settings], attribute: str, key: str) -> None:
    """For a list of tables whose ``attribute`` must differ (names, topics): the first repeat.

    Called from the parent's ``__post_init__``; the error names the list's ``key``.
    """
    seen = [getattr(v, attribute) for v in values]
    if repeated := next((v for v in seen if seen.count(v) > 1), None):
        raise invalid(key, f"{attribute} {repeated!r} appears twice")


class MetricsSection(Settings, frozen=True):
    """Optional: a Prometheus endpoint, GET http://<listen>/metrics."""

    listen: (
        Annotated[
            Address, Meta(description="host:port; off when not set", examples=["127.0.0.1:9464"])
        ]
        | None
    ) = None


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
    model: type[S], data: dict[str, Any], *, error: ErrorFactory, base: Path | None = None
) -> S:
    """``data`` as ``model``, or the first problem as ``error(dotted key, problem)``.

    Relative file names (``FilePath``) are taken from ``base``, defaults included; the
    ``__post_init__`` checks see them so.
    """
    try:
        settings = msgspec.convert(data, model, dec_hook=functools.partial(_decode, base))
    except msgspec.ValidationError as exc:
        loc, problem = _explained(model, data, str(exc))
        raise error(dotted(loc) or "file", problem) from None
    return settings if base is None else _anchored(settings, base)


def dotted(loc: tuple[str | int, ...]) -> str:
    """("sources", "modbus", 0, "port") -> "sources.modbus[0].port"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _explained(model: type[Settings], data: object, text: str) -> tuple[tuple[str | int, ...], str]:
    """The key at fault and the problem in our words, from msgspec's ``message - at `$.path```."""
    parsed = _AT.match(text)
    assert parsed is not None  # noqa: S101 - the pattern matches any text
    message, path = parsed["message"], parsed["path"] or ""
    loc: tuple[str | int, ...] = tuple(
        int(index) if index else name for name, index in _PART.findall(path)
    )
    if named := _FIELD_NAMED.match(message):
        loc += (named["key"],)
        if named["what"] == "missing required":
            return loc, "is required"
        close = difflib.get_close_matches(named["key"], _keys_at(model, loc[:-1]), n=1)
        return loc, "is not a known setting" + (f"; did you mean {close[0]!r}?" if close else "")
    if (own := _OWN_KEY.match(message)) and own["key"] in _keys_at(model, loc):
        return (*loc, own["key"]), own["problem"]  # a __post_init__'s words, complete
    given = _value_at(data, loc)
    node = _node_at(model, loc)
    if _OUT_OF_RANGE.match(message) and node is not None and (allowed := _constraints(node)):
        return loc, f"must be {allowed[0]}, got {given!r}"
    message = re.sub(r", got `\w+`$", "", message).replace("`", "")
    message = message[:1].lower() + message[1:]
    return loc, message if given is _MISSING else f"{message}, got {given!r}"


def _value_at(data: object, loc: tuple[str | int, ...]) -> object:
    """What the file wrote at ``loc`` (``_MISSING`` where it wrote nothing)."""
    for part in loc:
        found = isinstance(data, dict) and part in data
        found |= isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not found:
            return _MISSING
        data = data[part]  # type: ignore[index]
    return data


def _unwrapped(node: types.Type) -> tuple[types.Type, dict[str, Any]]:
    """The type inside ``Annotated``/``X | None``, and its documentation (description...)."""
    documented: dict[str, Any] = {}
    while True:
        if isinstance(node, types.Metadata):
            documented = {**(node.extra_json_schema or {}), **documented}
            node = node.type
        elif isinstance(node, types.UnionType):
            inner = [t for t in node.types if not isinstance(t, types.NoneType)]
            if len(inner) != 1:
                return node, documented
            node = inner[0]
        else:
            return node, documented


def _node_at(model: type[Settings], loc: tuple[str | int, ...]) -> types.Type | None:
    """The type of the key at ``loc`` (a table, a list, a value), None if not a key."""
    node, _ = _unwrapped(types.type_info(model))
    for part in loc:
        if isinstance(part, int) and isinstance(node, types.ListType | types.TupleType):
            node = node.item_type if isinstance(node, types.ListType) else node.item_types[0]
        elif isinstance(part, str) and isinstance(node, types.StructType):
            field = next((f for f in node.fields if f.name == part), None)
            if field is None:
                return None
            node = field.type
        else:
            return None
        node, _ = _unwrapped(node)
    return node


def _keys_at(model: type[Settings], loc: tuple[str | int, ...]) -> list[str]:
    """The keys the table at ``loc`` accepts."""
    node = _node_at(model, loc)
    if isinstance(node, types.ListType):
        node, _ = _unwrapped(node.item_type)
    return [f.name for f in node.fields] if isinstance(node, types.StructType) else []


def _anchored(value: S, base: Path) -> S:
    """``value`` with its default file names taken from ``base`` (given ones already are)."""
    changes: dict[str, Any] = {}
    for field in msgspec.structs.fields(value):
        current = getattr(value, field.name)
        if isinstance(current, Path) and current == field.default:
            changes[field.name] = base / current
        elif isinstance(current, Settings):
            changes[field.name] = _anchored(current, base)
        elif isinstance(current, list | tuple) and any(isinstance(v, Settings) for v in current):
            changes[field.name] = type(current)(_anchored(v, base) for v in current)
    return msgspec.structs.replace(value, **changes) if changes else value


def reference(model: type[Settings]) -> str:
    """An annotated example of the whole file: every key with its default, range and meaning.

    A key's example value is its ``examples[0]`` or else its default; a required key without
    an example is shown commented out. Tables come after the plain keys of their parent.
    """
    root, _ = _unwrapped(types.type_info(model))
    assert isinstance(root, types.StructType)  # noqa: S101 - a Settings model is a struct
    return "\n".join(_table_lines(root, "", array=False)).strip() + "\n"


def _table_of(node: types.Type) -> tuple[types.StructType | None, bool]:
    """(the table's struct, whether it is an array of tables) for a key; (None, _) if a value."""
    node, _ = _unwrapped(node)
    if isinstance(node, types.ListType):
        inner, _ = _unwrapped(node.item_type)
        return (inner, True) if isinstance(inner, types.StructType) else (None, False)
    return (node, False) if isinstance(node, types.StructType) else (None, False)


def _table_lines(table: types.StructType, name: str, *, array: bool) -> list[str]:
    lines: list[str] = []
    tables = [(f, *_table_of(f.type)) for f in table.fields]
    scalars = [f for f, inner, _ in tables if inner is None]
    if name and (scalars or array):  # a table of tables only is implied by its tables' headers
        header = f"[[{name}]]" if array else f"[{name}]"
        lines += ["", _commented(header, table.cls.__doc__ or "")]
    lines += [_key_line(field) for field in scalars]
    for field, inner, is_array in tables:
        if inner is not None:
            key = f"{name}.{field.name}" if name else field.name
            lines += _table_lines(inner, key, array=is_array)
    return lines


def _key_line(field: types.Field) -> str:
    node, documented = _unwrapped(field.type)
    examples = documented.get("examples") or []
    default = None
    if not field.required:
        default = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    example = examples[0] if examples else default  # None: optional, not set
    facts = [] if default is None else [f"default {_toml(default)}"]
    facts += _constraints(node)
    text = str(documented.get("description", "")).rstrip(".")
    note = "; ".join([*(["required"] if field.required else []), *facts])
    comment = f"{text} ({note})" if text and note else text or note
    if example is None:
        return _commented(f"# {field.name} = ...", comment)
    return _commented(f"{field.name} = {_toml(example)}", comment)


def _constraints(node: types.Type) -> list[str]:
    """Ranges and choices, as a reader of the example needs them."""
    node, _ = _unwrapped(node)
    if isinstance(node, types.LiteralType):
        return [" or ".join(_toml(c) for c in node.values)]
    if isinstance(node, types.StrType) and node.max_length is not None:
        return [f"at most {node.max_length} characters"]
    if not isinstance(node, types.IntType | types.FloatType):
        return []
    low = node.ge if node.ge is not None else node.gt
    high = node.le if node.le is not None else node.lt
    if low is not None and high is not None:
        return [f"{_toml(low)}..{_toml(high)}"]
    return [f"at least {_toml(low)}"] if low is not None else []


def _toml(value: Any) -> str:  # noqa: ANN401 - any default or example
    """A value as TOML writes it (strings quoted, booleans lower case)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:  # noqa: PLR2004
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if value is None:
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
