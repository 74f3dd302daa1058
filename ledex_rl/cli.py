"""`ledex-rl`: one command per stage, plus helpers. `python -m ledex_rl.train` runs them all."""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from pathlib import Path

import click

from ledex_rl import console
from ledex_rl.config import ConfigError, LedexConfig, load_config
from ledex_rl.errors import UserError

CONFIG_HELP = "YAML config (see configs/); defaults are the embedded SmolLM2 run."
OVERRIDES_HELP = "Dotted overrides after the options, e.g. rl.ppo.kl_coef=0.05 data.train.0.limit=5"


def config_options(func):
    func = click.option("--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)(func)
    func = click.argument("overrides", nargs=-1)(func)
    return func


def load_or_exit(config_path: str | None, overrides: tuple[str, ...]) -> LedexConfig:
    try:
        return load_config(config_path, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def load_run(config_path: str | None, overrides: tuple[str, ...]) -> LedexConfig:
    """The config of a stage command, with the console and run_dir/logs set up (`ledex-rl -v`: all live)."""
    cfg = load_or_exit(config_path, overrides)
    console.setup(cfg.run_dir, click.get_current_context().find_root().params.get("verbose", False))
    return cfg


def fail_cleanly(func):
    """Known user-facing failures (`UserError`: config, input, data, model, sandbox, cluster, a dead actor)
    become one line on stderr and exit code 2; bugs keep tracebacks."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """LeDex on Ray: collect -> sft -> rl -> eval."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _stage_command(name: str, summary: str):
    @main.command(name=name, help=f"{summary}\n\n{OVERRIDES_HELP}")
    @config_options
    @click.option("--force", is_flag=True, help="Redo the stage even if its output exists.")
    @fail_cleanly
    def command(config_path, overrides, force):
        from ledex_rl.pipeline import run_stage

        cfg = load_run(config_path, overrides)
        ran = run_stage(name, cfg, force=force)
        if not ran:
            click.echo(f"{name}: output already in {cfg.run_dir}/{name}; use --force to redo it")

    return command


_stage_command("collect", "Sample first attempts, execute them, and collect verified explanations and refinements.")
_stage_command("sft", "Fine-tune the policy on the collected trajectories.")
_stage_command("rl", "PPO with the LeDex code and explanation rewards.")


@main.command(
    name="eval",
    help="pass@k of first attempts and of refinements (refine-only, explain-then-refine), the "
    "refinement success rate and iterative refinement, then a report comparing every evaluated model.\n\n" + OVERRIDES_HELP,
)
@config_options
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Evaluate this instead of eval.models: final, base, sft, rl, a HF id or a model folder (repeatable).",
)
@click.option("--force", is_flag=True, help="Redo the evaluation even if its output exists.")
@fail_cleanly
def eval_command(config_path, overrides, models, force):
    from dataclasses import replace

    from ledex_rl.pipeline import run_stage
    from ledex_rl.run_dir import stage_dir
    from ledex_rl.stages import eval as evaluate

    cfg = load_run(config_path, overrides)
    if models:  # any model, any time: results go beside the pipeline's in run_dir/eval/<label>
        cfg = replace(cfg, eval=replace(cfg.eval, models=tuple(models)))
        evaluate.run(cfg, stage_dir(cfg, "eval"), force=force)
    elif not run_stage("eval", cfg, force=force):
        click.echo(f"eval: output already in {Path(cfg.run_dir) / 'eval'}; use --force to redo it")


@main.command(name="report")
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", default="report", show_default=True, help="Folder for report.md and the plots.")
@click.option("--training", default="", help="A run dir whose SFT/RL logs to plot (default: the first path, if a run dir).")
@fail_cleanly
def report_command(paths, out, training):
    """Compare evaluations: PATHS are run dirs, eval folders or results.json files (first = baseline)."""
    from ledex_rl.eval_report import find_results, write_report

    results = find_results(paths)
    run_dir = Path(training) if training else (Path(paths[0]) if (Path(paths[0]) / "eval").is_dir() else None)
    written = write_report(results, Path(out), run_dir=run_dir)
    click.echo((Path(out) / "report.md").read_text())
    click.echo("wrote " + ", ".join(str(p) for p in written))


@main.command(
    name="debug",
    help="Run each PROGRAM's tests in the sandbox; while they fail, show the model's explanation "
    "and fix. One model serves every program.\n\nTests: asserts, test_ functions or a pytest file (parametrize, raises, "
    "approx; the program imported by its file name); by default test_NAME.py beside NAME.py.\n\nDotted config "
    "overrides go among the files, e.g. sandbox.test_timeout_s=10 model.max_model_len=4096",
)
@click.argument("args", nargs=-1, required=True, metavar="PROGRAM... [KEY=VALUE...]")
@click.option(
    "--tests",
    "tests_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="The tests file: one per PROGRAM, in order (default: test_NAME.py beside NAME.py).",
)
@click.option(
    "--model",
    default="",
    help="Built-in name, HF id or folder (default: this run's newest trained policy, "
    "else model.name_or_path); with --endpoint, the model name the endpoint serves.",
)
@click.option("--endpoint", default="", help="An OpenAI-compatible base URL to ask instead of a local model.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1), help="At most this many explain-and-fix rounds.")
@click.option("--temperature", default=0.0, show_default=True, type=click.FloatRange(min=0.0), help="0 = greedy.")
@click.option("--max-new-tokens", default=512, show_default=True, type=click.IntRange(min=1))
@click.option("--write", "write_back", is_flag=True, help="Overwrite each PROGRAM with its fix when its tests pass (keeps PROGRAM.bak).")
@click.option("--out", "out_path", default="", help="Write the fixed program here instead (one PROGRAM only).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the report (for CI); same exit codes.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@fail_cleanly
def debug_command(args, tests_paths, model, endpoint, rounds, temperature, max_new_tokens, write_back, out_path, as_json, config_path):
    from ledex_rl import debugger, user_tests

    programs, overrides = _split_debug_args(args)
    pairs = [(p, user_tests.tests_path_for(p, tests_paths, i, len(programs))) for i, p in enumerate(programs)]
    if out_path and len(programs) > 1:
        raise click.UsageError("--out takes one PROGRAM; use --write to save the fixes of several")
    inputs = [(p, debugger.read_program(p), _with_helpers(user_tests.read_tests(t), p, t)) for p, t in pairs]
    cfg = load_or_exit(config_path, overrides)
    say = (lambda *_: None) if as_json else click.echo
    settings = debugger.DebugSettings(rounds, temperature, max_new_tokens, cfg.seed)
    with debugger.Session(model, endpoint, cfg, settings=settings) as session:
        reports = [_debug_one(session, program, source, tests, say, out_path, write_back) for program, source, tests in inputs]
    if len(reports) > 1:
        say(f"\n{sum(r['passes'] for r in reports)} of {len(reports)} programs pass their tests ({sum(r['fixed'] for r in reports)} fixed)")
    if as_json:
        click.echo(
            json.dumps(
                {"programs": reports, "passing": sum(r["passes"] for r in reports), "fixed": sum(r["fixed"] for r in reports)}, indent=1
            )
        )
    if not all(r["passes"] for r in reports):
        sys.exit(1)


def _with_helpers(tests, program: str, tests_path: str):
    """The tests, with the user's modules that the program and the tests import from their folders."""
    from dataclasses import replace

    from ledex_rl.user_tests import local_modules

    return replace(tests, modules=local_modules([program, tests_path], exclude=Path(program).stem))


def _split_debug_args(args: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """PROGRAM files and KEY=VALUE overrides, in any order."""
    overrides = [a for a in args if re.match(r"^[A-Za-z_][\w.]*=", a) and not Path(a).exists()]
    programs = [a for a in args if a not in overrides]
    if not programs:
        raise click.UsageError("no PROGRAM given: pass the Python file(s) to debug")
    return programs, overrides


def _debug_one(session, program, source, tests, say, out_path, write_back) -> dict:
    """Test one program, explain and fix it while it fails, save the fix where asked -> its JSON report."""
    from ledex_rl import debugger

    started = time.perf_counter()
    module = Path(program).stem
    first = session.test(source, tests, module)
    say(f"{program}: {first.num_passed} of {len(first.tests)} tests pass (sandbox tier {session.sandbox.tier})")
    for reason in tests.skipped:
        say(f"   not run: {reason}")
    outcome = None
    if not first.passed:
        say(_indent(first.feedback()) + _limits_hint(first, session.cfg.sandbox))
        say(f"asking {session.fixer.name} to explain and fix it (up to {session.settings.rounds} rounds)")
        events = debugger.DebugEvents(progress=lambda text: say(f"   ... {text}"), round_done=lambda step: _show_round(step, say))
        outcome = session.fix(source, tests, module, first, events)
    target = Path(out_path) if out_path else (Path(program) if write_back else None)
    report = _debug_json(program, first, tests, outcome, _save_fix(program, source, outcome, target, say))
    return report | {"seconds": round(time.perf_counter() - started, 2)}  # the first failing program's includes the model's start


def _show_round(step, say) -> None:
    say(f"\n== round {step.round}: explanation")
    say(_indent(step.explanation))
    say(f"== round {step.round}: proposed fix")
    say("   the model returned the program unchanged" if step.unchanged else _indent(step.diff))
    say(f"== round {step.round}: " + ("all tests pass" if step.passed else "still failing:\n" + _indent(step.feedback)))


def _limits_hint(result, sandbox_cfg) -> str:
    """The limits a test ran into, named with the settings that raise them."""
    if result.status not in ("timeout", "killed") and not any(t.status == "timeout" for t in result.tests):
        return ""
    return (
        f"\n   limits: {sandbox_cfg.test_timeout_s:g} s per test (sandbox.test_timeout_s), {sandbox_cfg.job_timeout_s:g} s "
        f"per run (sandbox.job_timeout_s), {sandbox_cfg.memory_mb} MB (sandbox.memory_mb); raise one with e.g. "
        "sandbox.test_timeout_s=10 after the file names"
    )


def _save_fix(program, source, outcome, target, say):
    """Write the fix where asked (keeping PROGRAM.bak when overwriting it) -> the path written, or None."""
    if outcome is None:
        say("nothing to fix.")
        return None
    if not outcome.passed:
        say(f"\nnot fixed after {len(outcome.rounds)} round(s); {program} is unchanged.")
        return None
    if target is None:
        say(f"\nfixed after {len(outcome.rounds)} round(s); --write to save it into {program}, or --out FILE.")
        return None
    if str(target) == str(program):
        Path(program + ".bak").write_text(source)
    target.write_text(outcome.code)
    say(f"\nfixed after {len(outcome.rounds)} round(s); wrote {target}")
    return str(target)


def _debug_json(program, first, tests, outcome, written) -> dict:
    rounds = [
        {
            "round": r.round,
            "explanation": r.explanation,
            "diff": r.diff,
            "unchanged": r.unchanged,
            "passed": r.passed,
            "feedback": r.feedback,
        }
        for r in (outcome.rounds if outcome else [])
    ]
    fixed = bool(outcome and outcome.passed)
    return {
        "program": program,
        "tests": len(first.tests),
        "passed_before": first.num_passed,
        "feedback_before": first.feedback(),
        "not_run": list(tests.skipped),
        "fixed": fixed,
        "passes": first.passed or fixed,
        "rounds": rounds,
        "written": written,
        "code": outcome.code if fixed else None,
    }


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.rstrip().splitlines())


@main.command(name="config", help=f"Print the resolved config as YAML.\n\n{OVERRIDES_HELP}")
@config_options
def show_config(config_path, overrides):
    click.echo(load_or_exit(config_path, overrides).to_yaml(), nl=False)


@main.command(name="prepare-model")
@click.argument("name", default="smollm2-135m-instruct")
@fail_cleanly
def prepare_model(name: str) -> None:
    """Convert or build a built-in model (smollm2-135m-instruct, tiny, miniature-base) once; print its folder."""
    from ledex_rl.models import resolve_model

    click.echo(resolve_model(name, "NAME"))


@main.command(name="sandbox-check", help=f"Show which isolation tier this machine gives and prove it holds.\n\n{OVERRIDES_HELP}")
@config_options
@fail_cleanly
def sandbox_check(config_path, overrides):
    """Start the sandbox as configured, then run a correct program and two hostile ones."""
    from ledex_rl.problems.base import TestCase
    from sandbox import Job, Sandbox

    cfg = load_or_exit(config_path, overrides).sandbox
    tests = (TestCase(kind="assert", source="assert add(1, 2) == 3"),)
    with Sandbox.from_config(cfg, slots=1) as box:
        click.echo(f"isolation tier: {box.tier}" + (f" (jobs run on {box.python})" if box.python else ""))
        click.echo(f"Landlock: {'ABI ' + str(box.landlock_abi) if box.landlock_abi else 'unavailable'}")
        checks = [
            ("a correct program passes", "def add(a, b):\n    return a + b", True),
            (
                "a network connection is refused",
                "import socket\ndef add(a, b):\n    socket.create_connection(('127.0.0.1', 8265), timeout=1)\n    return 3",
                False,
            ),
            (
                "an always-equal object does not pass",
                "class E:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E()",
                False,
            ),
        ]
        ok = True
        for label, program, should_pass in checks:
            result = box.run_one(Job(program, tests, entry_point="add"))
            good = result.passed == should_pass
            ok &= good
            click.echo(f"  [{'ok' if good else 'FAIL'}] {label} ({result.wall_ms:.1f} ms){'' if good else ': ' + result.feedback()}")
    if not ok:
        sys.exit(1)


@main.command(
    name="cluster-check",
    help="Check that a config's actors fit a cluster: a Ray cluster launcher file or a "
    "KubeRay RayJob/RayCluster manifest (each actor on one node type; each stage within the cluster's "
    "maximum size).\n\n" + OVERRIDES_HELP,
)
@click.argument("cluster_file", type=click.Path(dir_okay=False))
@config_options
@fail_cleanly
def cluster_check(cluster_file, config_path, overrides):
    from ledex_rl import cluster_plan

    cfg = load_or_exit(config_path, overrides)
    cluster = cluster_plan.load_cluster(cluster_file)
    click.echo(cluster_plan.describe(cfg, cluster))
    problems = cluster_plan.check(cfg, cluster)
    for line in problems:
        click.echo(f"does not fit: {line}", err=True)
    if problems:
        sys.exit(1)
    click.echo("fits: every actor has a node type, and every stage fits the cluster at its maximum size")


@main.command(name="miniature-teacher")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8123, show_default=True)
@click.option("--error-rate", default=0.2, show_default=True, help="Share of answers that blame the wrong bug and fail.")
@fail_cleanly
def miniature_teacher(host: str, port: int, error_rate: float) -> None:
    """Serve the miniature domain's scripted teacher as an OpenAI-compatible endpoint (configs/miniature.yaml)."""
    from ledex_rl.miniature_teacher import ScriptedTeacher, TeacherServer

    server = TeacherServer(ScriptedTeacher.for_every_split(error_rate), host, port)
    click.echo(f"miniature teacher at {server.url} (error rate {error_rate:g}); Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


@main.command(name="problems")
@click.argument("source")
@click.option("--path", default="", help="Local file; default: package data or the hub.")
@click.option("--split", default="test", show_default=True)
@click.option("--limit", default=0, help="0 = all.")
@fail_cleanly
def list_problems(source: str, path: str, split: str, limit: int) -> None:
    """Load a problem SOURCE (humaneval, mbpp, mbpp-plus, apps, ...) and summarise it."""
    from ledex_rl.config import ProblemSourceConfig
    from ledex_rl.config_schema import build
    from ledex_rl.problems import load_problems

    cfg = build(ProblemSourceConfig, {"name": source, "path": path, "split": split, "limit": limit}, "source")
    problems, report = load_problems(cfg)
    tests = sum(len(p.tests) for p in problems)
    click.echo(f"{source} [{split}]: {len(problems)} problems, {tests} tests, {len(report.skipped)} rows skipped")
    for line in report.skipped[:20]:
        click.echo(f"  {line}")


if __name__ == "__main__":
    main()
