import textwrap
from pathlib import Path

import pytest

from voxmesh.agent import AgentFileError, load_agent
from voxmesh.guardrail_policy import DEFAULT_SAFE_LINE, GuardrailPolicy
from voxmesh_guardrails.__main__ import load_guardrails
from voxmesh_guardrails.settings import GuardrailsSettings

AGENT = """
name: test-agent
system_prompt: You help.
"""


def _write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults() -> None:
    policy = GuardrailPolicy()
    assert policy.input.injection and policy.input.pii
    assert (policy.pii.card_number.input, policy.pii.card_number.output) == ("redact", "block")
    assert (policy.pii.national_id.input, policy.pii.national_id.output) == ("redact", "block")
    assert policy.pii.action("phone", "output") == "allow"
    assert policy.pii.national_id_locales == ["US"]
    assert policy.safe_line == DEFAULT_SAFE_LINE and policy.leak_protection.enabled


def test_a_partial_kind_keeps_its_own_defaults() -> None:
    policy = GuardrailPolicy.model_validate({"pii": {"card_number": {"output": "redact"},
                                                     "email": {"output": "block"}}})
    assert policy.pii.card_number.input == "redact"  # the card default, not "allow"
    assert (policy.pii.email.input, policy.pii.email.output) == ("allow", "block")


def test_agent_without_section_gets_the_default_policy(tmp_path: Path) -> None:
    assert load_agent(_write(tmp_path, AGENT)).guardrails == GuardrailPolicy()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("guardrails: {pii: {card_number: {output: shout}}}",
         "guardrails.pii.card_number.output: Input should be 'redact', 'block' or 'allow'"),
        ("guardrails: {pii: {national_id_locales: [XX]}}",
         "guardrails.pii.national_id_locales.0: Input should be 'US', 'UK', 'DE' or 'FR'"),
        ("guardrails: {blocked_topic: []}", "guardrails.blocked_topic: Extra inputs"),
        ("guardrails: {blocked_topics: [{name: x, pattern: '(unclosed'}]}",
         "guardrails.blocked_topics.0.pattern: not a valid regular expression"),
        ("guardrails: {blocked_topics: [{name: x}]}", "needs 'phrases' or a 'pattern'"),
        ("guardrails: {blocked_topics: [{name: x, phrases: [a]}, {name: x, phrases: [b]}]}",
         "topic names must be unique; repeated: x"),
        ("guardrails: {leak_protection: {threshold: 1.5}}",
         "guardrails.leak_protection.threshold: Input should be less than or equal to 1"),
    ],
)
def test_bad_policies_name_the_field(tmp_path: Path, section: str, message: str) -> None:
    path = _write(tmp_path, AGENT + section + "\n")
    with pytest.raises(AgentFileError) as info:
        load_agent(path)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "value", ["a.yaml, b.yaml", '["a.yaml", "b.yaml"]'])
def test_agent_files_setting_takes_commas_or_json(
        monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("VOXMESH_GUARDRAILS_AGENT_FILES", value)
    settings = GuardrailsSettings()
    assert settings.agent_files == [Path("a.yaml"), Path("b.yaml")]
    assert settings.port == 50054 and settings.unknown_agent == "default"


def test_bad_or_duplicate_agent_files_stop_the_service(tmp_path: Path) -> None:
    good = _write(tmp_path, AGENT)
    twin = _write(tmp_path, AGENT, "twin.yaml")
    with pytest.raises(SystemExit, match="'test-agent' is defined twice"):
        load_guardrails(GuardrailsSettings(agent_files=[good, twin]))
    with pytest.raises(SystemExit, match="cannot read agent file"):
        load_guardrails(GuardrailsSettings(agent_files=[tmp_path / "missing.yaml"]))
    assert load_guardrails(GuardrailsSettings(agent_files=[good])).agents == ["test-agent"]
