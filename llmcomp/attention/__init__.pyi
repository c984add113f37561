from .base import (
    AttentionError as AttentionError,
)
from .base import (
    AttentionSource as AttentionSource,
)
from .base import (
    ScoreResult as ScoreResult,
)
from .base import (
    ScoreStats as ScoreStats,
)
from .base import (
    normalize_scores as normalize_scores,
)
from .base import (
    validate_attention as validate_attention,
)
from .cache import AttentionCache as AttentionCache
from .registry import (
    BASELINES as BASELINES,
)
from .registry import (
    CACHED as CACHED,
)
from .registry import (
    SOURCES as SOURCES,
)
from .registry import (
    make_source as make_source,
)
from .registry import (
    source_class as source_class,
)
