"""The package's public names, and what importing it costs.

The web app must serve its page before torch has loaded (torch alone takes 1.5 s or more to import
on a 2-core machine), so building the app imports neither torch, transformers nor the openai SDK;
they load in the background once the page is up, or on first use.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "openai")


def imported_after(code: str, tmp_path) -> list[str]:
    """Which of HEAVY a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "LLMCOMP_HOME": str(tmp_path), "LLMCOMP_PRELOAD": "0"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_web_app_imports_no_torch(tmp_path):
    assert imported_after("import llmcomp.ui.app as a\na.build_app()", tmp_path) == []


def test_import_llmcomp_is_cheap(tmp_path):
    assert imported_after("import llmcomp, llmcomp.attention, llmcomp.training", tmp_path) == []


def test_a_public_name_loads_what_it_needs(tmp_path):
    assert imported_after("from llmcomp import GPT", tmp_path) == ["torch"]


@pytest.mark.parametrize("package", ["llmcomp", "llmcomp.attention", "llmcomp.training"])
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018 - the lookup itself is the test
