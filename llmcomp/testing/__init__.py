"""Test doubles that ship with llmcomp, for tests, benchmarks and offline demos (not used by the library itself).

``fake_server``: a fake OpenAI-compatible chat server on 127.0.0.1 (``python -m llmcomp.testing.fake_server``);
``behaviours``: what its fake model answers; ``faults``: what a test can script it to do wrong; ``sparse``: its
sparse answers; ``fake_batch`` and ``batch_lines``: its Files and Batch API.
"""
