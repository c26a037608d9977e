import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voxmesh.agent import AgentFileError, load_agent

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "services" / "worker" / "agents").glob("*.yaml"))

GOOD = """
name: test-agent
system_prompt: You help.
tools:
  - name: lookup
    description: Look something up.
    parameters: {type: object, properties: {id: {type: string}}, required: [id]}
    python: voxmesh_worker.example_tools:book_table
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_agents_are_valid(path: Path) -> None:
    agent = load_agent(path)
    assert agent.name == path.stem and agent.tools and agent.greeting


def test_good_file_loads(tmp_path: Path) -> None:
    agent = load_agent(_write(tmp_path, GOOD))
    assert agent.tools[0].name == "lookup" and agent.turn_taking.min_endpointing_ms == 448


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("name: test-agent", "name: Test Agent"), "name: String should match pattern"),
        (("system_prompt: You help.", "gretting: hi\nsystem_prompt: You help."),
         "gretting: Extra inputs are not permitted"),
        (("system_prompt: You help.", "system_prompt: You help.\nturn_taking: "
          "{min_endpointing_ms: 10}"),
         "turn_taking.min_endpointing_ms: Input should be greater than or equal to 64 (got 10)"),
        (("system_prompt: You help.", "system_prompt: You help.\nturn_taking: "
          "{min_endpointing_ms: 900, max_endpointing_ms: 500}"),
         "max_endpointing_ms must be at least min_endpointing_ms"),
        (("{type: object, properties", "{type: objekt, properties"),
         "tools.0.parameters: not a valid JSON Schema"),
        (("    python: voxmesh_worker.example_tools:book_table",
          "    python: voxmesh_worker.example_tools:book_table\n    http: {url: http://x/y}"),
         "a tool needs exactly one of 'python', 'http' or 'subagent'"),
    ],
)
def test_bad_values_name_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = _write(tmp_path, GOOD.replace(*change))
    with pytest.raises(AgentFileError) as info:
        load_agent(path)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)


def test_duplicate_tools_and_unreadable_files(tmp_path: Path) -> None:
    tool = GOOD.split("tools:\n")[1]
    with pytest.raises(AgentFileError, match="repeated: lookup"):
        load_agent(_write(tmp_path, GOOD + tool))
    with pytest.raises(AgentFileError, match="must be a YAML mapping"):
        load_agent(_write(tmp_path, "- just a list"))
    with pytest.raises(AgentFileError, match="not valid YAML"):
        load_agent(_write(tmp_path, "name: [unclosed"))
    with pytest.raises(AgentFileError, match="cannot read agent file"):
        load_agent(tmp_path / "missing.yaml")


def test_voxmesh_up_refuses_a_bad_agent_file_before_starting_anything(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("You help.", "''"))
    result = subprocess.run(
        [sys.executable, "-m", "voxmesh.cli.main", "up", "--agent", str(path),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "system_prompt: String should have at least 1 character" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "logs").exists()
