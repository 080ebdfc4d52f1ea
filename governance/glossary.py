"""The glossary: the figures the system reports, defined once (``glossary.toml``).

Each term names the dictionary object that holds or computes it and the columns it reads;
``parse_glossary`` refuses a term pointing at an object or column the data dictionary does not
have, so a renamed view cannot leave the glossary describing nothing.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from core_ingest.schema.dictionary import Dictionary, load_dictionary
from proto.settings import Settings, validate


class GlossaryError(ValueError):
    """The glossary file is wrong; the message names the term and key."""


class Term(Settings, frozen=True):
    """One reported figure."""

    definition: Annotated[str, Meta(min_length=1)]
    unit: str
    formula: Annotated[str, Meta(min_length=1)]
    computed_by: Annotated[str, Meta(min_length=1)]
    columns: list[str]
    aliases: list[str] = msgspec.field(default_factory=list)


class Glossary(Settings, frozen=True):
    """Every term, by name."""

    terms: dict[str, Term]


def parse_glossary(data: dict[str, Any], dictionary: Dictionary) -> Glossary:
    """The glossary from parsed TOML, each term checked against ``dictionary``.

    Raises:
        GlossaryError: naming the term and key at fault.

    """
    terms = {}
    for name, entry in data.get("terms", {}).items():

        def error(key: str, problem: str, name: str = name) -> GlossaryError:
            return GlossaryError(f"glossary.toml: terms.{name}.{key}: {problem}")

        term = validate(Term, entry, error=error)
        target = dictionary.objects.get(term.computed_by)
        if target is None:
            raise error("computed_by", f"{term.computed_by!r} is not in the data dictionary")
        if unknown := [c for c in term.columns if c not in target.columns]:
            raise error("columns", f"{unknown} are not columns of {term.computed_by}")
        terms[name] = term
    return Glossary(terms=terms)


@functools.cache
def load_glossary() -> Glossary:
    """The glossary shipped with this release, checked against its data dictionary."""
    text = resources.files(__package__).joinpath("glossary.toml").read_text(encoding="utf-8")
    return parse_glossary(tomllib.loads(text), load_dictionary())
