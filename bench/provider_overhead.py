"""Provider adapters (``make bench``): time to first byte they add over a bare client.

Each cloud provider adapter (Deepgram STT, OpenAI-compatible LLM, Cartesia TTS) is timed
against a bare client talking to the same local wire-compatible server, in interleaved trials
within one run (``bench/overhead_<provider>.py``). The target is at most 3 ms added at p95.
The servers are local stand-ins for the vendors' protocols (tests/support) or a deterministic
OpenAI-compatible server, so the figures hold no network or model time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

import overhead_cartesia  # noqa: E402 - after the path set-up above
import overhead_deepgram  # noqa: E402
import overhead_openai  # noqa: E402

TARGET_P95_MS = 3.0


async def _measure_all(trials: int) -> dict[str, Any]:
    section: dict[str, Any] = {}
    for name, module in (("deepgram_stt", overhead_deepgram), ("openai_llm", overhead_openai),
                         ("cartesia_tts", overhead_cartesia)):
        result = await module.measure(trials)
        section[name] = result
        print(f"  {name:<13} adapter adds p50 {result['overhead_ms']['p50']} ms, "
              f"p95 {result['overhead_ms']['p95']} ms", file=sys.stderr, flush=True)
    return section


def main() -> None:
    """Measures every adapter and merges ``provider_overhead`` into the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    section = asyncio.run(_measure_all(args.trials))
    worst = max(result["overhead_ms"]["p95"] for result in section.values())
    section.update({"max_overhead_p95_ms": worst, "target_p95_ms": TARGET_P95_MS,
                    "date": time.strftime("%Y-%m-%d")})
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing["provider_overhead"] = section
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"provider adapters: worst p95 overhead {worst} ms (target {TARGET_P95_MS:g} ms) "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
