"""What a run prints: one line per stage, warnings and errors on the console; everything in
run_dir/logs/ (the driver's log, and a link to the Ray node's logs); -v shows all of it live."""

import logging

import pytest

from ledex_rl import console


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    console._Settings.logs_dir, console._Settings.actor_logs_live = None, True


def test_the_console_gets_stage_lines_and_warnings_and_the_log_file_gets_everything(tmp_path, capfd, restore_logging):
    logs = console.setup(tmp_path / "run", verbose=False)
    logging.getLogger("ledex_rl.stages.rl").info("engine weights synced in 0.4 s")
    logging.getLogger(console.STAGE_LOG).info("rl: started")
    logging.getLogger("vllm").warning("a vendor warning")
    shown = capfd.readouterr().err
    assert "rl: started" in shown and "a vendor warning" in shown and "engine weights synced" not in shown
    written = (logs / "driver.log").read_text()
    assert "engine weights synced in 0.4 s" in written and "rl: started" in written and "a vendor warning" in written
    assert not console.actor_logs_live()  # the actors' output stays in their log files


def test_verbose_shows_everything_live(tmp_path, capfd, restore_logging):
    console.setup(tmp_path / "run", verbose=True)
    logging.getLogger("ledex_rl.stages.rl").info("engine weights synced in 0.4 s")
    assert "engine weights synced in 0.4 s" in capfd.readouterr().err and console.actor_logs_live()


def test_the_run_links_the_ray_nodes_logs(tmp_path, ray_cluster, restore_logging):
    logs = console.setup(tmp_path / "run", verbose=False)
    link = console.link_ray_logs()
    assert link == logs / "ray" and link.is_symlink()
    assert any(p.name.startswith(("raylet", "gcs_server")) for p in link.iterdir())  # the node's own log files
    assert console.link_ray_logs() == link  # relinked, not an error, when a later stage connects again
