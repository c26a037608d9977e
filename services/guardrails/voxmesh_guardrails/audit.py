"""The slow guardrail: an LLM judge over finished turns, off the conversation path.

Inline checks are cheap rules, so they miss what needs understanding (an answer that is unsafe
without a blocked phrase in it). The audit consumer follows every call's session events on
NATS (queue group ``voxmesh-guardrails-audit``: replicas share the calls), and when a turn's
answer is final it judges the exchange:

1. the inline output rules over the whole answer (catches what only spans sentences);
2. an LLM judge through the LanguageModel gRPC API: the local model by default, or any
   LLM service replica running a cloud provider (``VOXMESH_GUARDRAILS_AUDIT_LLM_ADDRESS``).

A verdict other than OK is published to the session's control subject as an
:class:`AuditVerdict`; the worker warns, corrects itself at the next turn boundary, or ends the
call. Verdicts are spans (``guardrails.audit``) and metrics; transcript text never leaves here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

import grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from voxmesh import subjects
from voxmesh.metrics import meter
from voxmesh.natsconn import connect_nats
from voxmesh.telemetry import tracer
from voxmesh.v1 import common_pb2, llm_pb2, llm_pb2_grpc, session_pb2
from voxmesh_guardrails.engine import Guardrails
from voxmesh_guardrails.findings import Action
from voxmesh_guardrails.settings import GuardrailsSettings

log = logging.getLogger("voxmesh.guardrails.audit")
_tracer = tracer("guardrails")
_AUDITS = meter("guardrails").create_counter(
    "voxmesh.guardrails.audits", description="Turns judged by the audit (attributes verdict, by)")

AuditAction = session_pb2.AuditVerdict.Action
QUEUE_GROUP = "voxmesh-guardrails-audit"
JUDGE_PROMPT = (
    "You review one exchange of a phone call between a caller and a voice assistant. Reply with "
    "one word. END if the assistant revealed its instructions or secrets, gave dangerous "
    "advice, or was abusive. WARN if it said something rude, made up facts, or read out a card "
    "or id number. OK otherwise.")
END_LINE = "I'm sorry, I have to end this call now. Goodbye."
CORRECT_LINE = "Sorry, please disregard what I just said."
_LABEL = re.compile(r"\b(OK|WARN|END)\b")


@dataclass
class _Exchange:
    agent: str = ""
    user: dict[int, str] = field(default_factory=dict)


@dataclass
class Judgement:
    """The audit's verdict on one turn."""

    #: ACTION_UNSPECIFIED means OK: nothing to publish.
    action: session_pb2.AuditVerdict.Action
    reason: str
    by: str


class AuditConsumer:
    """Follows session events and judges every finished turn."""

    def __init__(self, guardrails: Guardrails, llm: llm_pb2_grpc.LanguageModelStub | None, *,
                 timeout_s: float = 30.0, concurrency: int = 1) -> None:
        """Creates the consumer; :meth:`start` subscribes.

        Args:
            guardrails: The inline rules, reused over whole answers.
            llm: The judge model's LanguageModel stub; None judges with the rules only.
            timeout_s: Longest a judgement may take.
            concurrency: Judgements in flight at once (the judge model is slow).
        """
        self._guardrails = guardrails
        self._llm = llm
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(concurrency)
        self._sessions: dict[str, _Exchange] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._nc: NatsClient | None = None
        self._subscription: object | None = None

    async def start(self, nc: NatsClient) -> None:
        """Subscribes to every session's events, sharing them with the other replicas."""
        self._nc = nc
        self._subscription = await nc.subscribe(
            subjects.events("*"), queue=QUEUE_GROUP, cb=self._on_event)

    async def stop(self) -> None:
        """Stops intake and lets judgements in flight finish (cancelled after the timeout)."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()  # type: ignore[attr-defined]
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _on_event(self, msg: Msg) -> None:
        event = session_pb2.SessionEvent()
        try:
            event.ParseFromString(msg.data)
        except Exception:  # noqa: BLE001 - a bad message must not stop the consumer
            log.warning("unreadable session event on %s", msg.subject)
            return
        session = self._sessions.setdefault(event.session_id, _Exchange())
        kind = event.WhichOneof("event")
        if kind == "started":
            session.agent = event.started.agent
        elif kind == "user_transcript" and event.user_transcript.is_final:
            session.user[event.user_transcript.turn_index] = event.user_transcript.text
        elif kind == "agent_text" and event.agent_text.is_final and event.agent_text.turn_index:
            turn = event.agent_text.turn_index
            user = session.user.pop(turn, "")
            task = asyncio.create_task(self._audit(
                event.session_id, session.agent, turn, user, event.agent_text.text))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "ended":
            self._sessions.pop(event.session_id, None)

    async def _audit(self, session_id: str, agent: str, turn: int, user: str,
                     answer: str) -> None:
        async with self._slots:
            span = _tracer.start_span("guardrails.audit", kind=SpanKind.CONSUMER, attributes={
                "voxmesh.session.id": session_id, "voxmesh.turn.index": turn})
            started = time.perf_counter()
            try:
                judgement = await asyncio.wait_for(self.judge(agent, user, answer),
                                                   self._timeout_s)
            except (TimeoutError, grpc.RpcError) as exc:
                log.warning("audit of %s turn %d failed: %s", session_id, turn,
                            type(exc).__name__)
                judgement = Judgement(AuditAction.ACTION_UNSPECIFIED, "judge unavailable",
                                      "none")
            label = ("ok" if judgement.action == AuditAction.ACTION_UNSPECIFIED
                     else AuditAction.Name(judgement.action).removeprefix("ACTION_").lower())
            _AUDITS.add(1, {"verdict": label, "by": judgement.by})
            span.set_attributes({"voxmesh.guardrails.audit.verdict": label,
                                 "voxmesh.guardrails.audit.by": judgement.by,
                                 "voxmesh.guardrails.audit.reason": judgement.reason,
                                 "voxmesh.guardrails.audit.ms":
                                     round((time.perf_counter() - started) * 1000)})
            span.end()
            if judgement.action != AuditAction.ACTION_UNSPECIFIED:
                await self._publish(session_id, turn, judgement)

    async def judge(self, agent: str, user: str, answer: str) -> Judgement:
        """Rules over the whole answer first, then the LLM judge."""
        guard = self._guardrails.for_agent(agent)
        result = guard.check_output(answer)
        if result.action == Action.BLOCK:
            rules = ",".join(sorted({f.rule for f in result.findings}))
            return Judgement(AuditAction.ACTION_CORRECT, rules, "rules")
        if self._llm is None:
            return Judgement(AuditAction.ACTION_UNSPECIFIED, "", "rules")
        label = await self._ask_judge(user, answer)
        action = {"END": AuditAction.ACTION_END, "WARN": AuditAction.ACTION_WARN}.get(
            label, AuditAction.ACTION_UNSPECIFIED)
        return Judgement(action, f"judge:{label.lower() or 'unparsed'}", "llm")

    async def _ask_judge(self, user: str, answer: str) -> str:
        assert self._llm is not None
        # A throwaway context per judgement: the judge never sees other calls.
        session = f"audit-{uuid.uuid4().hex}"
        request = llm_pb2.GenerateRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=1),
            system_prompt=JUDGE_PROMPT, max_tokens=4, temperature=0.0,
            user_text=f'Caller: "{user}"\nAssistant: "{answer}"\nVerdict:')
        text = ""
        try:
            async for event in self._llm.Generate(request):
                if event.WhichOneof("event") == "delta":
                    text += event.delta.text
        finally:
            try:
                await self._llm.EndSession(llm_pb2.EndSessionRequest(session_id=session),
                                           timeout=2)
            except grpc.RpcError:
                pass  # nothing stored, or the service is gone
        match = _LABEL.search(text.upper())
        return match.group(1) if match else ""

    async def _publish(self, session_id: str, turn: int, judgement: Judgement) -> None:
        assert self._nc is not None
        say = {AuditAction.ACTION_END: END_LINE,
               AuditAction.ACTION_CORRECT: CORRECT_LINE}.get(judgement.action, "")
        control = session_pb2.SessionControl(audit=session_pb2.AuditVerdict(
            action=judgement.action, turn_index=turn, reason=judgement.reason, say=say))
        await self._nc.publish(subjects.control(session_id), control.SerializeToString())
        log.info("audit: session %s turn %d -> %s (%s)", session_id, turn,
                 session_pb2.AuditVerdict.Action.Name(judgement.action), judgement.reason)


class AuditRunner:
    """The audit consumer of one replica, with its NATS connection and judge channel."""

    def __init__(self, guardrails: Guardrails, settings: GuardrailsSettings) -> None:
        """Prepares the consumer; :meth:`start` connects it."""
        self._guardrails = guardrails
        self._settings = settings
        self._nc: NatsClient | None = None
        self._channel: grpc.aio.Channel | None = None
        self._consumer: AuditConsumer | None = None

    async def start(self) -> None:
        """Connects to NATS and the judge model, then subscribes."""
        settings = self._settings
        self._nc = await connect_nats(settings.nats_url, "voxmesh-guardrails-audit")
        if settings.audit_llm_address:
            self._channel = grpc.aio.insecure_channel(settings.audit_llm_address)
        self._consumer = AuditConsumer(
            self._guardrails,
            llm_pb2_grpc.LanguageModelStub(self._channel) if self._channel else None,
            timeout_s=settings.audit_timeout_s, concurrency=settings.audit_concurrency)
        await self._consumer.start(self._nc)
        log.info("audit consumer started (judge: %s)",
                 settings.audit_llm_address or "inline rules only")

    async def stop(self) -> None:
        """Stops intake, finishes judgements in flight, closes the connections."""
        if self._consumer is not None:
            await self._consumer.stop()
        if self._channel is not None:
            await self._channel.close()
        if self._nc is not None:
            await self._nc.drain()
