from .app.sources import build_source as build_source
from .attention import (
    AttentionCache as AttentionCache,
)
from .attention import (
    AttentionSource as AttentionSource,
)
from .attention import (
    make_source as make_source,
)
from .errors import LLMCompError as LLMCompError
from .generation import (
    GenerateConfig as GenerateConfig,
)
from .generation import (
    Generation as Generation,
)
from .generation import (
    Generator as Generator,
)
from .generation import (
    generate as generate,
)
from .model import GPT as GPT
from .model import GPTConfig as GPTConfig
from .text import (
    Corpus as Corpus,
)
from .text import (
    CorpusConfig as CorpusConfig,
)
from .text import (
    load_corpus as load_corpus,
)
from .text import (
    parse_corpus as parse_corpus,
)
from .text import (
    tokenize as tokenize,
)
from .training import (
    TrainConfig as TrainConfig,
)
from .training import (
    Trainer as Trainer,
)
from .training import (
    TrainResult as TrainResult,
)
from .training import (
    load_checkpoint as load_checkpoint,
)
from .training import (
    train as train,
)

__version__: str
