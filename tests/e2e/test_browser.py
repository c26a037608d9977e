"""Headless Chromium against the page served by the edge, speaking through a fake microphone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from voxmesh.audio import resample
from voxmesh.cli.caller_audio import CallerVoice, write_wav
from voxmesh.cli.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SENTENCE = "I would like to book a table for two people."


@pytest.fixture
def mic_wav(tmp_path: Path, caller_voice: CallerVoice) -> Path:
    """The caller's words with silence around them; Chromium loops the file as its microphone."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed; `make test` installs it (make browser)")
    speech = resample(caller_voice.speak(SENTENCE), 16000, 48000)
    silence = b"\0\0" * 48000
    path = tmp_path / "mic.wav"
    write_wav(path, silence + speech + silence * 8, rate=48000)
    return path


async def test_page_shows_transcript_and_plays_agent_audio(
    stack: Stack, mic_wav: Path, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic_wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            page = await browser.new_page()
            await page.goto(stack.edge_url)
            await page.click("#call")
            await page.wait_for_function(
                "() => window.voxmesh.events.some("
                "e => e.user_transcript && e.user_transcript.is_final)",
                timeout=60_000,
            )
            await page.wait_for_function(
                "() => window.voxmesh.agentAudioMaxLevel > 0.01", timeout=60_000
            )
            await page.wait_for_function(
                "() => document.querySelectorAll('#latency tr').length > 0", timeout=60_000
            )
            transcript = (await page.inner_text("#transcript")).lower()
            assert "table" in transcript and "two people" in transcript, transcript
            level = await page.evaluate("window.voxmesh.agentAudioMaxLevel")
            assert level > 0.01
            # The turn's waterfall is drawn live, with a bar per stage.
            widths = await page.evaluate(
                "[...document.querySelectorAll('#waterfalls .waterfall .wf-bar')]"
                ".map(b => parseFloat(b.style.width))")
            assert len(widths) == 6 and sum(w > 0 for w in widths) >= 5, widths
            first_row = (await page.inner_text("#latency tr")).split()
            assert first_row[0] == "#1" and int(first_row[1]) > 0  # turn, voice-to-voice ms
            screenshot = Path(os.environ.get("VOXMESH_SCREENSHOT", tmp_path / "page.png"))
            await page.screenshot(path=str(screenshot), full_page=True)
            await page.click("#hangup")
            await page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('Call ended')",
                timeout=15_000)
        finally:
            await browser.close()
