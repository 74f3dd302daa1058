"""Stage output written a chunk of tasks at a time, so a stopped stage resumes where it stopped.

Each chunk becomes one `part-NNNNN.parquet`, written to a temporary name and renamed: a part is whole
or absent. On resume, the tasks found in the parts are done and are not redone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class Parts:
    def __init__(self, folder: Path, schema: pa.Schema):
        self.folder, self.schema = Path(folder), schema

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []

    def finished_tasks(self) -> set[str]:
        done: set[str] = set()
        for part in self._files():
            done.update(pq.read_table(part, columns=["task_id"]).column("task_id").to_pylist())
        return done

    def write(self, rows: list[dict]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"part-{len(self._files()):05d}.parquet"
        tmp = final.with_suffix(".tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=self.schema), tmp)
        os.replace(tmp, final)

    def read_rows(self) -> list[dict]:
        tables = [pq.read_table(p) for p in self._files()]
        return pa.concat_tables(tables).to_pylist() if tables else []
