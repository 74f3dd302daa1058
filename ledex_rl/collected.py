"""The collected data: what collection writes (`run_dir/collect/parts/*.parquet`, one `CollectedRow` per
executed first attempt or teacher refinement) and how the training stages read it back.
`run_dir/collect/problems.jsonl`, the problem set the rows are about, is `problem_set.py`'s."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from ledex_rl.errors import UserError


@dataclass(frozen=True)
class CollectedRow:
    """One executed first attempt or teacher refinement, as stored (a row of SCHEMA)."""

    task_id: str
    source: str
    kind: Literal["first_attempt", "refinement"]
    mode: Literal["generate", "explain_refine", "refine"]
    sample_index: int  # first attempt: its index among unique attempts; refinement: its index for its parent
    parent_index: int  # refinement: sample_index of the wrong first attempt; -1 otherwise
    messages: str  # the conversation that produced `response` (JSON)
    response: str
    explanation: str
    code: str
    wrong_code: str
    wrong_feedback: str  # refinement: what it was asked to fix
    passed: bool
    pass_rate: float
    num_tests: int
    status: str
    feedback: str
    test_results: str  # JSON list of {status, message}
    model: str
    temperature: float
    max_tokens: int
    seed: int
    duplicates: int = 1  # first attempt: how many samples produced this same code


ARROW_TYPES = {"str": pa.string(), "bool": pa.bool_(), "float": pa.float32(), "int": pa.int32()}
WIDE = {"seed": pa.int64()}  # seeds are 64-bit
SCHEMA = pa.schema(
    [(f.name, WIDE.get(f.name) or ARROW_TYPES["str" if f.type.startswith("Literal") else f.type]) for f in dataclasses.fields(CollectedRow)]
)


class NoTrainingData(UserError, ValueError):
    """Collection produced nothing SFT can learn; the message says how to get data."""


def read_collected(collect_dir: Path) -> list[CollectedRow]:
    parts = sorted((collect_dir / "parts").glob("part-*.parquet"))
    if not parts:
        raise NoTrainingData(f"sft: no collected data in {collect_dir}/parts; run the collect stage first (ledex-rl collect)")
    return rows_of(pa.concat_tables([pq.read_table(p) for p in parts]).to_pylist())


def rows_of(records: list[dict]) -> list[CollectedRow]:
    """Stored records (parquet rows) as typed rows."""
    return [CollectedRow(**record) for record in records]


def write_rows(path: Path, rows: list[CollectedRow]) -> None:
    """One parquet file of rows (collection writes its parts through `Parts`, a chunk at a time)."""
    pq.write_table(pa.Table.from_pylist(records_of(rows), schema=SCHEMA), path)


def records_of(rows: list[CollectedRow]) -> list[dict]:
    """Typed rows as records for a SCHEMA table."""
    return [dataclasses.asdict(row) for row in rows]
