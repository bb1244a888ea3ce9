"""Training data curation (ToRL's dataset pipeline): ingest, filter, deduplicate, decontaminate,
LIMR selection, synthetic tasks, and output in the format the trainer reads.

Every stage is a function returning `(records, StageReport)` and a `torl data <stage>` command;
`run_pipeline` chains them with a combined report whose counts add up.
"""

from torl.data.decontam import decontaminate, load_benchmark
from torl.data.dedup import deduplicate
from torl.data.filters import RULES as FILTER_RULES
from torl.data.filters import filter_records
from torl.data.ingest import InputSpec, ingest
from torl.data.limr import lim_scores, limr_select
from torl.data.pipeline import PipelineConfig, export, load_config, run_pipeline
from torl.data.records import DataError, read_records, write_records
from torl.data.report import StageReport
from torl.data.synthetic import TASK_KINDS, generate_tasks
from torl.data.templates import apply_template

__all__ = [
    "FILTER_RULES",
    "TASK_KINDS",
    "DataError",
    "InputSpec",
    "PipelineConfig",
    "StageReport",
    "apply_template",
    "decontaminate",
    "deduplicate",
    "export",
    "filter_records",
    "generate_tasks",
    "ingest",
    "lim_scores",
    "limr_select",
    "load_benchmark",
    "load_config",
    "read_records",
    "run_pipeline",
    "write_records",
]
