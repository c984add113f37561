from .checkpoint import (
    Checkpoint as Checkpoint,
)
from .checkpoint import (
    CheckpointError as CheckpointError,
)
from .checkpoint import (
    load_checkpoint as load_checkpoint,
)
from .checkpoint import (
    save_checkpoint as save_checkpoint,
)
from .config import (
    TrainConfig as TrainConfig,
)
from .trainer import (
    Trainer as Trainer,
)
from .trainer import (
    TrainResult as TrainResult,
)
from .trainer import (
    evaluate as evaluate,
)
from .trainer import (
    train as train,
)
