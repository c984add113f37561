"""Training: batching, the trainer loop, checkpoints, the run folder.

Names are imported on first use (lazy_loader; the list is in ``__init__.pyi``), so the web app can
import ``llmcomp.training.run_folder`` without importing torch.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)
