"""Docs stay honest: every command has help with an example and is in the README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from core_ingest.cli import main as core_ingest
from edge_agent.cli import main as edge_agent
from governance.cli import main as governance
from substation_sim.cli import main as substation_sim

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
PROGRAMS = {
    "edge-agent": edge_agent,
    "core-ingest": core_ingest,
    "substation-sim": substation_sim,
    "governance": governance,
}


def leaf_commands() -> list[tuple[str, click.Command]]:
    found = []

    def walk(prefix: str, group: click.Group) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(f"{prefix} {name}", command)
            else:
                found.append((f"{prefix} {name}", command))

    for program, group in PROGRAMS.items():
        walk(program, group)
    return found


@pytest.mark.parametrize(("name", "command"), leaf_commands(), ids=str)
def test_every_command_has_help_with_an_example_and_is_in_the_readme(name, command):
    """A newcomer finds each command in the README and a runnable example in its --help."""
    assert command.help, f"{name} has no help text"
    assert "Example:" in command.help, f"{name} --help has no Example:"
    assert f"`{name}" in README, f"README does not document `{name}`"
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            assert parameter.help, f"{name} {parameter.opts[0]} has no help text"
