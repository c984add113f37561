"""Experiments built on the library: the attention-source comparison (``llmcomp compare``).

``compare`` runs it, ``tables`` computes its tables (one corpus per table), ``report`` writes its
files, ``labels`` reads source labels against the catalogue; its command line is ``llmcomp.cli.compare``.
Names are imported on first use (lazy_loader; the list is in ``__init__.pyi``), so ``labels`` and
``tables`` can be imported without torch.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)
