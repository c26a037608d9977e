"""Policies compiled per agent, and the verdict on one input or output text.

Input (the caller's transcript): injection/jailbreak rules, then PII. An injection or a PII
kind whose input action is ``block`` → BLOCK; PII to redact → REDACT with the rewritten text.

Output (one sentence the agent is about to say): blocked topics, system prompt leak, then PII.
A topic → BLOCK with the topic's replacement line (or the safe line); a leak or PII to block →
BLOCK with the safe line; PII to redact → REDACT.

A BLOCK always carries the line to say instead in ``CheckResult.text``, so the worker never has
to invent one. Every rule that fired is reported, whatever decided the action.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from voxmesh.agent import AgentDefinition
from voxmesh.guardrail_policy import GuardrailPolicy
from voxmesh_guardrails.checks.injection import find_injection
from voxmesh_guardrails.checks.leak import PromptLeakCheck
from voxmesh_guardrails.checks.pii import PiiCheck
from voxmesh_guardrails.checks.topics import TopicCheck
from voxmesh_guardrails.findings import Action, CheckResult, Finding

log = logging.getLogger("voxmesh.guardrails")


def _sorted(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda finding: (finding.start, finding.rule)))


class AgentGuard:
    """One agent's policy, compiled: patterns, PII actions and prompt shingles."""

    def __init__(self, policy: GuardrailPolicy, system_prompt: str = "",
                 greeting: str = "") -> None:
        """Compiles ``policy``; leak protection needs the agent's ``system_prompt``."""
        self.policy = policy
        self._injection = policy.input.injection
        self._input_pii = PiiCheck(policy.pii, "input") if policy.input.pii else None
        self._output_pii = PiiCheck(policy.pii, "output")
        self._topics = TopicCheck(policy.blocked_topics)
        leak = policy.leak_protection
        self._leak = PromptLeakCheck(
            system_prompt, size=leak.shingle_words, threshold=leak.threshold,
            public=[*leak.allow, greeting],
        ) if leak.enabled and system_prompt else None

    def check_input(self, text: str) -> CheckResult:
        """Verdict on a caller transcript."""
        findings = find_injection(text) if self._injection else []
        action = Action.BLOCK if findings else Action.ALLOW
        rewritten = text
        if self._input_pii is not None:
            pii = self._input_pii.check(text)
            findings += pii.findings
            action = max(action, pii.action)
            rewritten = pii.text
        if action == Action.BLOCK:
            return CheckResult(Action.BLOCK, self.policy.safe_line, _sorted(findings))
        if action == Action.REDACT:
            return CheckResult(Action.REDACT, rewritten, _sorted(findings))
        return CheckResult(Action.ALLOW)

    def check_output(self, sentence: str) -> CheckResult:
        """Verdict on one sentence of agent output."""
        topics = self._topics.check(sentence)
        findings = [hit.finding for hit in topics]
        replacement = next((hit.replacement for hit in topics if hit.replacement), "")
        action = Action.BLOCK if topics else Action.ALLOW
        if self._leak is not None and (leak := self._leak.check(sentence)) is not None:
            findings.append(leak)
            action = Action.BLOCK
        pii = self._output_pii.check(sentence)
        findings += pii.findings
        action = max(action, pii.action)
        if action == Action.BLOCK:
            return CheckResult(Action.BLOCK, replacement or self.policy.safe_line,
                               _sorted(findings))
        if action == Action.REDACT:
            return CheckResult(Action.REDACT, pii.text, _sorted(findings))
        return CheckResult(Action.ALLOW)


class Guardrails:
    """Compiled guards of every known agent, and the default for unknown ones."""

    def __init__(self, agents: Iterable[AgentDefinition] = (),
                 default_policy: GuardrailPolicy | None = None) -> None:
        """Compiles each agent's policy; agent names must be unique."""
        self._guards: dict[str, AgentGuard] = {}
        for agent in agents:
            if agent.name in self._guards:
                raise ValueError(f"agent {agent.name!r} is defined twice")
            self._guards[agent.name] = AgentGuard(
                agent.guardrails, agent.system_prompt, agent.greeting)
        self.default = AgentGuard(default_policy or GuardrailPolicy())
        self._warned: set[str] = set()

    @property
    def agents(self) -> list[str]:
        """Names of the agents with their own policy."""
        return sorted(self._guards)

    def get(self, agent: str) -> AgentGuard | None:
        """The guard of ``agent``, or None when it has no file here."""
        return self._guards.get(agent)

    def for_agent(self, agent: str) -> AgentGuard:
        """The guard of ``agent``, falling back to the default policy (logged once per name)."""
        guard = self._guards.get(agent)
        if guard is not None:
            return guard
        if agent not in self._warned and len(self._warned) < 1000:
            self._warned.add(agent)
            log.warning("no agent file for %r; checking with the default policy", agent)
        return self.default
