"""Latency-model LLM: a synthetic provider for capacity tests of the platform, not a model.

Every request is answered with the same configured text, streamed one word token at a time:
the first after a delay drawn from a :class:`~voxmesh.latency_model.DelayDistribution`, the
rest at a fixed token rate. It goes through the service's whole path (context in NATS KV,
summaries, CommitHeard) like a real provider, never calls tools, and reports itself as
``latency-model`` wherever provider names surface (docs/latency-model-providers.md).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncGenerator, Sequence

from voxmesh.errors import ConfigError
from voxmesh.latency_model import DelayDistribution
from voxmesh_llm.providers.base import ChatMessage, Completion, LLMProvider, ToolSpec

# A token is a word with the whitespace before it, as BPE tokenizers cut English text, so the
# deltas join back into the text exactly.
_TOKEN = re.compile(r"\s*\S+")


def word_tokens(text: str) -> list[str]:
    """Splits ``text`` into word tokens that concatenate back to it (trailing space aside)."""
    return _TOKEN.findall(text)


class LatencyModelLLM(LLMProvider):
    """Streams a fixed answer at a set first-token delay and token rate; runs no model.

    Generations run concurrently (the delays are :func:`asyncio.sleep`), unlike the local
    model's one-at-a-time lock: the platform around it is what is under test.
    """

    name = "latency-model"

    def __init__(
        self, *, first_token: DelayDistribution, tokens_per_s: float, text: str, seed: int = 0
    ) -> None:
        """Creates the provider.

        Args:
            first_token: Delay from the request to the first token, in milliseconds.
            tokens_per_s: Rate of the tokens after the first.
            text: The answer to every request.
            seed: Seeds the delays.

        Raises:
            ConfigError: If ``text`` has no word or the rate is not positive.
        """
        super().__init__()
        self._tokens = word_tokens(text)
        if not self._tokens:
            raise ConfigError("the latency-model LLM provider needs a non-empty text")
        if not tokens_per_s > 0:
            raise ConfigError(f"tokens per second must be positive, got {tokens_per_s}")
        self._first_token = first_token
        self._interval_s = 1.0 / tokens_per_s
        self._rng = random.Random(seed)
        # Reports print the model id next to the figures; it carries the synthetic settings.
        self.model = f"latency-model(first_token={first_token},tokens_per_s={tokens_per_s:g})"

    async def _stream(
        self,
        messages: list[ChatMessage],
        tools: Sequence[ToolSpec],
        max_tokens: int,
        temperature: float,
        completion: Completion,
    ) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        first_at = loop.time() + self._first_token.sample_s(self._rng)
        completion.prompt_tokens = sum([await self.count_tokens(m.content) for m in messages])
        tokens = self._tokens[:max_tokens]
        completion.finish_reason = "length" if len(tokens) < len(self._tokens) else "stop"
        for index, token in enumerate(tokens):
            # Deadlines from the first token, not sleeps between tokens, so the time the
            # consumer spends on each delta does not slow the rate down.
            await asyncio.sleep(max(0.0, first_at + index * self._interval_s - loop.time()))
            completion.completion_tokens = index + 1
            yield token
