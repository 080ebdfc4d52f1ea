"""The glossary: every figure the system reports, defined once and tied to the dictionary."""

from __future__ import annotations

import json
import subprocess
import tomllib
from importlib import resources

import pytest
from fix_services import BIN

from core_ingest.schema.dictionary import load_dictionary
from governance.catalog import search
from governance.glossary import GlossaryError, load_glossary, parse_glossary

# The KPIs the reference case reports, and the units they are reported in.
REPORTED = {
    "interval-energy": "Wh",
    "completeness": "share (0..1)",
    "estimated-share": "share (0..1)",
    "suspect-share": "share (0..1)",
    "technical-losses": "Wh",
    "hot-spot-temperature": "°C",
}


def shipped() -> dict:
    return tomllib.loads(resources.files("governance").joinpath("glossary.toml").read_text())


def test_every_term_points_at_dictionary_objects_and_columns():
    """Loading checks each term against the dictionary; the KPIs are all there with units."""
    glossary = load_glossary()
    assert {name: glossary.terms[name].unit for name in REPORTED} == REPORTED
    dictionary = load_dictionary()
    for term in glossary.terms.values():
        assert set(term.columns) <= set(dictionary.objects[term.computed_by].columns)


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (
            lambda t: t.update(computed_by="region_dayly"),
            r"completeness\.computed_by: 'region_dayly'",
        ),
        (lambda t: t.update(columns=["recieved"]), r"completeness\.columns: \['recieved'\]"),
        (lambda t: t.update(formla="x"), r"completeness\.formla: is not a known setting"),
        (lambda t: t.pop("definition"), r"completeness\.definition: is required"),
    ],
)
def test_a_term_pointing_nowhere_is_refused_naming_it(edit, says):
    data = shipped()
    edit(data["terms"]["completeness"])
    with pytest.raises(GlossaryError, match=says):
        parse_glossary(data, load_dictionary())


def test_search_finds_objects_columns_and_terms_in_any_case():
    """Losses: the view, its columns, and the glossary's two loss figures."""
    hits = search(load_dictionary(), load_glossary(), "LOSSES")
    found = {(h.kind, h.name) for h in hits}
    assert ("view", "substation_day_losses") in found
    assert ("column", "substation_day_losses.losses_wh") in found
    assert {("term", "technical-losses"), ("term", "losses-share")} <= found
    assert search(load_dictionary(), load_glossary(), "no such words anywhere") == []


def test_search_finds_a_term_by_its_alias_from_the_command_line():
    """No database needed; the term comes with its definition, unit, formula and view."""
    done = subprocess.run(
        [str(BIN / "governance"), "catalog", "search", "DGA"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "term              dissolved-gas" in done.stdout
    assert "computed by: transformer_telemetry (value, metric)" in done.stdout
    as_json = subprocess.run(
        [str(BIN / "governance"), "catalog", "search", "completeness", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    terms = {h["name"]: h for h in json.loads(as_json.stdout) if h["kind"] == "term"}
    assert terms["completeness"]["term"]["computed_by"] == "region_day_quality"
    assert terms["completeness"]["term"]["formula"].startswith("received / expected")
