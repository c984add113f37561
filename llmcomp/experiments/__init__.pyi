from .compare import CompareConfig as CompareConfig
from .compare import CompareResult as CompareResult
from .compare import compare as compare
from .labels import CompareError as CompareError
from .tables import load_run as load_run
from .tables import summarize_runs as summarize_runs
from .tables import summary_table as summary_table
from .tables import summary_tables as summary_tables
