"""The Gradio web app (a thin layer: every computation lives in the library).

One rule keeps start-up fast: building the app must not import torch (tests/test_package.py checks
it). Tab modules therefore import the library's torch-bound parts (training, generation, sources'
base classes) inside the handlers that use them, and name their types under ``TYPE_CHECKING``.
"""

from llmcomp.ui.app import build_app, launch, launch_options

__all__ = ["build_app", "launch", "launch_options"]
