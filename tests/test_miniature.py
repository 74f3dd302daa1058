"""The miniature domain: generated tasks whose references pass and whose catalogued bugs fail (in the real
sandbox), held-out splits that cannot be memorised, and the scripted teacher over real HTTP."""

import hashlib

import pytest

from ledex_rl import prompts
from ledex_rl.config import ProblemSourceConfig
from ledex_rl.miniature_teacher import ScriptedTeacher, TeacherServer
from ledex_rl.problems import load_problems, miniature


def test_splits_are_deterministic_and_held_out_instances_are_new():
    train = miniature.instances("train")
    assert [i.task for i in train] == [i.task for i in miniature.instances("train")]
    pretraining = {i.task for i in miniature.instances("prompt")}
    seen = {i.task for i in miniature.instances("train", miniature.TRAIN_POOL)} | pretraining
    test = miniature.instances("test")
    assert len(test) == miniature.SPLIT_SIZES["test"] and not {i.task for i in test} & seen
    trained = {i.family for i in train}
    assert trained == {i.family for i in test} and len(trained) == 12
    unseen = {i.family for i in miniature.instances("unseen")}
    assert len(unseen) == 4 and not unseen & trained
    # names and constants vary: few held-out instances share a function name with any training one
    names = {i.fn for i in train}
    assert sum(i.fn in names for i in test) < len(test)


def test_the_generated_instances_stay_the_same():
    """The families' text lives in miniature_families.toml and their draws in code; the instances of
    every split (the learning check's data and the base model's corpus) must not move when either is
    reshaped. The digest is of the instances this domain has generated since the learning check began."""
    digest = hashlib.sha256()
    for split in ("train", "test", "prompt", "unseen"):
        for instance in miniature.instances(split, miniature.TRAIN_POOL if split == "train" else None):
            digest.update(repr(instance).encode())
    assert digest.hexdigest()[:16] == "406163bdfaf206be"
    families = {f.__name__ for f in miniature.TRAIN_FAMILIES + miniature.UNSEEN_FAMILIES}
    assert families == set(miniature.TEMPLATES), "every family has one table entry, and every entry a family"


def test_sources_load_through_the_config():
    problems, report = load_problems(ProblemSourceConfig(name="miniature", split="test", offset=2, limit=5))
    assert len(problems) == 5 == report.loaded and problems[0].task_id == "miniature/sum_range/2"
    unseen, _ = load_problems(ProblemSourceConfig(name="miniature-unseen", split="test", limit=3))
    assert {p.source for p in unseen} == {"miniature-unseen"}
    with pytest.raises(ValueError, match="split 'validation' does not exist"):
        load_problems(ProblemSourceConfig(name="miniature", split="validation"))


@pytest.fixture(scope="module")
def sandbox():
    from sandbox import Sandbox

    with Sandbox(slots=2) as box:
        yield box


def test_every_reference_passes_and_every_catalogued_bug_fails(sandbox):
    from sandbox import Job

    problems = miniature.load("miniature", "train") + miniature.load("miniature", "test") + miniature.load("miniature-unseen", "test")
    assert all(len(p.metadata["bugs"]) >= 2 for p in problems)
    references = sandbox.run([Job.for_problem(p, p.reference_solution) for p in problems])
    assert [p.task_id for p, r in zip(problems, references) if not r.passed] == []
    bugs = [(p, b["code"]) for p in problems for b in p.metadata["bugs"]]
    results = sandbox.run([Job.for_problem(p, code) for p, code in bugs])
    assert [code for (_, code), r in zip(bugs, results) if r.passed] == []


def _conversation(problem, sandbox, bug_index=0):
    from sandbox import Job

    wrong = problem.metadata["bugs"][bug_index]["code"]
    feedback = sandbox.run_one(Job.for_problem(problem, wrong)).feedback()
    return wrong, prompts.refinement_messages(problem, wrong, feedback, "explain_refine")


def test_the_teacher_names_the_bug_and_fixes_it_over_http(sandbox):
    from ledex_rl.teachers import OpenAITeacher
    from sandbox import Job

    problems = miniature.load("miniature", "test", limit=12)
    conversations = [_conversation(p, sandbox, i % 2) for i, p in enumerate(problems)]
    with TeacherServer(ScriptedTeacher(problems, error_rate=0.0)) as server:
        client = OpenAITeacher(server.url, "scripted")
        answers = client.complete([c for _, c in conversations], 2, 0.8, 200, list(range(len(problems))))
        again = client.complete([c for _, c in conversations], 2, 0.8, 200, list(range(len(problems))))
    assert answers == again  # seeded
    for i, (problem, texts) in enumerate(zip(problems, answers)):
        bug = problem.metadata["bugs"][i % 2]
        for text in texts:
            parsed = prompts.parse_response(text)
            assert bug["what"] in parsed.explanation and bug["fix"] in parsed.explanation
            assert sandbox.run_one(Job.for_problem(problem, parsed.code)).passed


def test_a_wrong_teacher_blames_another_bug_and_its_fix_fails(sandbox):
    from sandbox import Job

    problems = miniature.load("miniature", "test", limit=12)
    teacher = ScriptedTeacher(problems, error_rate=1.0)
    for problem in problems:
        wrong, conversation = _conversation(problem, sandbox)
        parsed = prompts.parse_response(teacher.answer(conversation, seed=5))
        assert parsed.code.strip() != wrong.strip()
        assert not sandbox.run_one(Job.for_problem(problem, parsed.code)).passed
    assert "cannot tell which task" in teacher.answer([{"role": "user", "content": "Write anything."}] * 3, seed=1)


def test_the_error_rate_is_the_share_of_failing_fixes(sandbox):
    from sandbox import Job

    problems = miniature.load("miniature", "train", limit=60)
    teacher = ScriptedTeacher(problems, error_rate=0.25)
    fixes = []
    for i, problem in enumerate(problems):
        _, conversation = _conversation(problem, sandbox)
        fixes += [(problem, prompts.parse_response(teacher.answer(conversation, 10 * i + k)).code) for k in range(4)]
    failed = sum(not r.passed for r in sandbox.run([Job.for_problem(p, code) for p, code in fixes]))
    assert 0.15 < failed / len(fixes) < 0.35


def test_a_mistake_outside_the_catalogue_is_named_from_the_code(sandbox):
    """The base model also writes wrong constants and other slips the catalogue does not list: the
    teacher names the differing code, not a vague 'rewrite it'."""
    from ledex_rl.miniature_teacher import describe_difference

    problem = miniature.load("miniature", "test", limit=2)[1]  # mul_const
    wrong = problem.reference_solution.replace(" * ", " * 1")
    from sandbox import Job

    feedback = sandbox.run_one(Job.for_problem(problem, wrong)).feedback()
    answer = ScriptedTeacher([problem], error_rate=0.0).answer(prompts.refinement_messages(problem, wrong, feedback, "explain_refine"), 1)
    constant = problem.reference_solution.split(" * ")[1].strip()
    assert f"`1{constant}` where the task needs `{constant}`" in answer
    assert describe_difference("f", "def f(x):\n    return sum(range(3, x))\n", "def f(x):\n    return sum(range(3, x + 1))\n") == (
        "f has no `+ 1`.",
        "add `+ 1`",
    )
    assert describe_difference("f", "def f(x:\n    return (", "def f(x):\n    return 1\n") is None
