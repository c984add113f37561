"""Training: batching, the trainer loop, checkpoints."""

from llmcomp.training.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from llmcomp.training.trainer import TrainConfig, Trainer, TrainResult, evaluate, train

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "evaluate",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]
