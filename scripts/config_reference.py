"""Write the README's configuration reference from the configuration models.

Each ``<!-- config-reference: NAME -->`` ... ``<!-- /config-reference -->`` block of README.md
is replaced by the annotated example ``proto.settings.reference`` writes for that file's model.
Run it after changing a model; tests/test_config_reference.py fails while the README is stale.

    .venv/bin/python scripts/config_reference.py
"""

from __future__ import annotations

import re
from pathlib import Path

from core_ingest.config import CoreConfig
from edge_agent.config import AgentConfig
from proto.settings import Settings, reference

README = Path(__file__).resolve().parent.parent / "README.md"
MODELS: dict[str, type[Settings]] = {"edge-agent.toml": AgentConfig, "core.toml": CoreConfig}
BLOCK = re.compile(
    r"(<!-- config-reference: (?P<name>[\w.-]+) -->\n)```toml\n.*?```\n"
    r"(<!-- /config-reference -->)",
    re.DOTALL,
)


def regenerated(text: str) -> str:
    """``text`` with every reference block written anew."""
    return BLOCK.sub(lambda m: f"{m[1]}```toml\n{reference(MODELS[m['name']])}```\n{m[3]}", text)


if __name__ == "__main__":
    before = README.read_text()
    after = regenerated(before)
    README.write_text(after)
    print("README.md " + ("updated" if after != before else "already current"))
