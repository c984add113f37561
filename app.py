"""Start the llmcomp web app: ``python app.py`` (also the entry point on Hugging Face Spaces).

Host and port come from LLMCOMP_HOST / LLMCOMP_PORT (default 127.0.0.1:7860); see docs/operations.md.
"""

from llmcomp.ui.app import launch

if __name__ == "__main__":
    launch()
