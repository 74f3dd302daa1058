"""The executor actor pool on a real local Ray cluster."""

import time

import pytest

from ledex_rl.config import ProblemSourceConfig, load_config
from ledex_rl.problems import load_problems
from sandbox import Job


@pytest.fixture(scope="module")
def pool(ray_cluster):
    from actors.executor_pool import ExecutorPool

    cfg = load_config(
        None, ["sandbox.num_executors=2", "sandbox.slots_per_executor=1", "sandbox.executor_num_cpus=0.25", "sandbox.jobs_per_call=8"]
    ).sandbox
    pool = ExecutorPool(cfg, name_prefix="test-executor")
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def jobs():
    problems = load_problems(ProblemSourceConfig(name="humaneval"))[0]
    right = [Job.for_problem(p, p.reference_solution) for p in problems]
    wrong = [Job.for_problem(p, "def nothing():\n    pass\n") for p in problems]
    return [job for pair in zip(right, wrong) for job in pair]  # alternate right and wrong


def test_pool_runs_a_batch_in_order(pool, jobs):
    results = pool.run(jobs)
    assert len(results) == len(jobs)
    assert [r.passed for r in results] == [i % 2 == 0 for i in range(len(jobs))]
    assert all(r.metadata["task_id"] == j.metadata["task_id"] for r, j in zip(results, jobs))
    infos = pool.info()
    assert len(infos) == 2 and all(i["tier"] for i in infos)
    assert sum(i["executed"] for i in infos) >= len(jobs)


def test_pool_survives_an_executor_dying_mid_batch(pool, jobs, ray_cluster):
    results = {}
    iterator = pool.run_iter(jobs)
    index, result = next(iterator)
    results[index] = result
    ray_cluster.kill(pool.actors[0], no_restart=False)  # Ray restarts it; its chunks are retried
    for index, result in iterator:
        results[index] = result
    assert sorted(results) == list(range(len(jobs)))
    assert [results[i].passed for i in range(len(jobs))] == [i % 2 == 0 for i in range(len(jobs))]
    assert pool.stats["retried_chunks"] >= 1
    deadline = time.time() + 60
    while time.time() < deadline:  # the restarted actor serves again
        try:
            assert pool.info()
            break
        except Exception:  # noqa: BLE001
            time.sleep(1)
    assert all(r.passed for r in pool.run(jobs[:4:2]))
