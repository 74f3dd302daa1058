"""The collected data: what collection writes (`run_dir/collect/parts/*.parquet`, one row per executed
first attempt or teacher refinement, in SCHEMA) and how the training stages read it back."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ledex_rl.errors import UserError

SCHEMA = pa.schema(
    [
        ("task_id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),  # first_attempt | refinement
        ("mode", pa.string()),  # generate | explain_refine | refine
        ("sample_index", pa.int32()),  # first attempt: its index among unique attempts; refinement: its index for its parent
        ("parent_index", pa.int32()),  # refinement: sample_index of the wrong first attempt; -1 otherwise
        ("messages", pa.string()),  # the conversation that produced `response` (JSON)
        ("response", pa.string()),
        ("explanation", pa.string()),
        ("code", pa.string()),
        ("wrong_code", pa.string()),
        ("wrong_feedback", pa.string()),  # refinement: what it was asked to fix
        ("passed", pa.bool_()),
        ("pass_rate", pa.float32()),
        ("num_tests", pa.int32()),
        ("status", pa.string()),
        ("feedback", pa.string()),
        ("test_results", pa.string()),  # JSON list of {status, message}
        ("model", pa.string()),
        ("temperature", pa.float32()),
        ("max_tokens", pa.int32()),
        ("seed", pa.int64()),
        ("duplicates", pa.int32()),  # first attempt: how many samples produced this same code
    ]
)


class NoTrainingData(UserError, ValueError):
    """Collection produced nothing SFT can learn; the message says how to get data."""


def read_collected(collect_dir: Path) -> list[dict]:
    parts = sorted((collect_dir / "parts").glob("part-*.parquet"))
    if not parts:
        raise NoTrainingData(f"sft: no collected data in {collect_dir}/parts; run the collect stage first (ledex-rl collect)")
    return pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist()
