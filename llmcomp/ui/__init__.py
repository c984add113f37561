"""The Gradio web app (a thin layer: every computation lives in the library)."""

from llmcomp.ui.app import build_app, launch, launch_options

__all__ = ["build_app", "launch", "launch_options"]
