"""The command line cannot lose a run: refusals before anything is written, one-line errors,
resume rules from the checkpoint, stale temp files, the run lock, --overwrite and --help."""
import dataclasses
import hashlib
import json
import os
import urllib.error
import urllib.request

import pytest

from npvae.config import ConfigError, TrainConfig
from npvae.fileio import run_lock
from npvae.train import RunFolderError, main, resolve_config, train

from .test_train import toy_config, toy_data


def make_run(tmp_path, **kw):
    cfg = toy_config(tmp_path, samples=400, **kw)
    train(cfg, data=toy_data(), log=lambda *_: None)
    return cfg


def fingerprint(folder):
    """Every file's bytes, so a test can tell that nothing in a run folder changed."""
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder)) if name != ".lock"}


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No data anywhere and no network: every download attempt is refused at once."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("NPVAE_CACHE_DIR", str(empty))
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)

    def refuse(*a, **k):
        raise urllib.error.URLError("no network in this test")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return str(empty)


def test_a_new_run_refuses_a_folder_that_holds_a_run(tmp_path, capsys):
    cfg = make_run(tmp_path)
    before = fingerprint(cfg.out)
    assert main([f"--out={cfg.out}"], TrainConfig()) == 2
    err = one_line_error(capsys)
    assert f"--resume {cfg.out}" in err and "--overwrite" in err
    assert fingerprint(cfg.out) == before
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(cfg, data=toy_data(), log=lambda *_: None)
    assert fingerprint(cfg.out) == before


def test_a_run_that_fails_at_start_writes_nothing(tmp_path, capsys, no_data):
    cfg = make_run(tmp_path)
    before = fingerprint(cfg.out)
    for argv in (["--resume", cfg.out, f"--data_dir={no_data}"],
                 [f"--out={cfg.out}", "--overwrite", f"--data_dir={no_data}", "--nz=3"]):
        assert main(argv, TrainConfig()) == 2
        err = one_line_error(capsys)
        assert err.index("mnist.pkl.gz") < err.index("idx") and "--data_dir=" in err
        assert fingerprint(cfg.out) == before                 # still resumable, config.json untouched
    assert not os.path.exists(tmp_path / "new")
    assert main([f"--out={tmp_path / 'new'}", f"--data_dir={no_data}"], TrainConfig()) == 2
    one_line_error(capsys)
    assert not os.path.exists(tmp_path / "new")               # no folder for a run that never started


def test_resume_takes_the_runs_config_from_its_checkpoint(tmp_path, capsys):
    cfg = make_run(tmp_path, lr=0.03, seed=4)
    config, resume, _ = resolve_config(["--resume", cfg.out, "--samples=800", "--progress=true"], TrainConfig())
    assert resume and (config.lr, config.seed, config.samples, config.progress) == (0.03, 4, 800, True)
    path = os.path.join(cfg.out, "config.json")
    saved = json.load(open(path))
    json.dump({**saved, "lr": 0.1}, open(path, "w"))              # edited by hand
    assert main(["--resume", cfg.out], TrainConfig()) == 2
    assert "lr" in one_line_error(capsys)
    json.dump({**saved, "samples": 10_000}, open(path, "w"))      # a run field may differ
    assert resolve_config(["--resume", cfg.out], TrainConfig())[0].samples == 400
    open(path, "w").write("{not json")
    assert main(["--resume", cfg.out], TrainConfig()) == 2
    assert "not valid JSON" in one_line_error(capsys)


def test_missing_or_damaged_checkpoints_say_what_to_do(tmp_path, capsys):
    cfg = make_run(tmp_path)
    assert main(["--resume", str(tmp_path / "nowhere")], TrainConfig()) == 2
    assert "no such folder" in one_line_error(capsys)
    ckpt = os.path.join(cfg.out, "checkpoint.npz")
    data = open(ckpt, "rb").read()
    open(ckpt, "wb").write(data[: len(data) // 2])               # a half-written file
    assert main(["--resume", cfg.out], TrainConfig()) == 2
    assert "damaged" in one_line_error(capsys)
    os.remove(ckpt)
    assert main(["--resume", cfg.out], TrainConfig()) == 2
    assert "nothing to resume" in one_line_error(capsys)


def test_killed_checkpoint_writes_are_cleaned_up_at_the_next_start(tmp_path):
    cfg = make_run(tmp_path)
    stale = os.path.join(cfg.out, ".checkpoint.npz.0123456789ab.tmp.npz")
    open(stale, "wb").write(b"\0" * 4096)
    mine = os.path.join(cfg.out, ".notes")
    open(mine, "w").write("a user's file")
    train(dataclasses.replace(cfg, samples=600), resume=True, data=toy_data(), log=lambda *_: None)
    assert not os.path.exists(stale) and os.path.exists(mine)


def test_a_resumed_run_is_marked_running_until_it_ends(tmp_path):
    cfg = make_run(tmp_path)
    assert json.load(open(os.path.join(cfg.out, "summary.json")))["status"] == "finished"
    seen = []

    def look(learner, state):
        seen.append(json.load(open(os.path.join(cfg.out, "summary.json")))["status"])
        return True
    train(dataclasses.replace(cfg, samples=600), resume=True, data=toy_data(), callback=look, log=lambda *_: None)
    assert seen[0] == "running"
    assert json.load(open(os.path.join(cfg.out, "summary.json")))["status"] == "interrupted"


def test_two_processes_never_train_into_one_folder(tmp_path):
    cfg = make_run(tmp_path)
    with run_lock(cfg.out):                                        # "another process" holds the run
        with pytest.raises(RunFolderError, match="another process"):
            train(dataclasses.replace(cfg, samples=600), resume=True, data=toy_data(), log=lambda *_: None)
    train(dataclasses.replace(cfg, samples=600), resume=True, data=toy_data(), log=lambda *_: None)


def test_overwrite_replaces_the_old_run(tmp_path):
    cfg = make_run(tmp_path, figures=True)
    assert os.path.exists(os.path.join(cfg.out, "learning_curves.png"))
    open(os.path.join(cfg.out, "my_notes.png"), "wb").write(b"a user's file")
    new = dataclasses.replace(cfg, seed=9, samples=200, figures=False)
    s = train(new, overwrite=True, data=toy_data(), log=lambda *_: None)
    assert s["samples"] == 200 and json.load(open(os.path.join(cfg.out, "config.json")))["seed"] == 9
    assert [f for f in os.listdir(cfg.out) if f.endswith(".png")] == ["my_notes.png"]   # no stale figures, and
    # nothing that the run did not write itself


@pytest.mark.parametrize("argv,says", [
    (["--bogus=1"], "unknown option --bogus"),
    (["--nz=x"], "cannot read 'x'"),
    (["--samples=1e400"], "cannot read"),
    (["--hidden=5,a"], "cannot read"),
    (["--nz=0"], "--nz must be positive"),
    (["--lr=-1"], "--lr must be a positive finite"),
    (["--algorithm=em"], "--algorithm must be one of"),
    (["--batch_size=60000"], "larger than the training set (50,000"),
    (["--dataset=frey", "--batch_size=1501"], "larger than the training set (1,500"),
    (["--eval_max=-1"], "--eval_max must be 0 or more"),
    (["--checkpoint_seconds=inf"], "--checkpoint_seconds must be a positive finite"),
    (["--checkpoint_seconds=0"], "--checkpoint_seconds must be a positive finite"),
    (["--init_std=nan"], "--init_std must be a positive finite"),
    (["--resume"], "--resume needs a folder"),
    (["stray"], "expected --key=value"),
    (["--lr"], "--lr needs a value"),
])
def test_user_errors_are_one_line_before_anything_loads(argv, says, tmp_path, capsys, monkeypatch):
    import npvae.data
    monkeypatch.setattr(npvae.data, "load_training_data", lambda *a, **k: pytest.fail("data loaded"))
    out = tmp_path / "run"
    assert main(argv + [f"--out={out}"] if argv != ["--resume"] else argv, TrainConfig()) == 2
    assert says in one_line_error(capsys)
    assert not out.exists()


def test_help_lists_every_option_with_its_default_and_meaning(capsys):
    assert main(["--help"], TrainConfig(lr=0.02)) == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        line = next(l for l in text.splitlines() if l.strip().startswith(f"--{f.name}="))
        assert len(line.split(None, 1)) == 2, line                 # the default, then a meaning
    assert "--lr=0.02" in text and "--hidden=500" in text and "--resume DIR" in text and "--overwrite" in text


def test_config_from_an_older_run_takes_defaults_for_new_fields():
    d = dataclasses.asdict(TrainConfig())
    del d["algorithm"]
    assert TrainConfig.from_dict(d).algorithm == "aevb"
    with pytest.raises(ConfigError, match="unknown field"):
        TrainConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ConfigError, match="lr must be float"):
        TrainConfig.from_dict({**d, "lr": "0.1"})


_PIPE_WRITER = """
import sys
from npvae.config import quiet_broken_pipe

def main():
    for i in range(200000):      # ~2 MB: far more than a pipe buffer holds, so the write must block
        print("line", i)
    return 0

def other_pipe():           # a broken pipe that is not stdout's (a worker's, a socket's)
    print("line 0", flush=True)
    raise BrokenPipeError("a worker's pipe")

sys.exit({"quiet": quiet_broken_pipe(main), "bare": main, "other": quiet_broken_pipe(other_pipe)}[sys.argv[1]]())
"""


@pytest.mark.parametrize("mode", ["quiet", "bare", "other"])
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(mode):
    """`python examples/figure3.py --help | head -1` printed a BrokenPipeError traceback.  The
    reader here takes one line and closes the pipe while the writer still has megabytes to go, so
    the writer always meets the closed pipe; the unwrapped writer shows that it would fail.  A
    broken pipe that is not stdout's (stdout still read) is raised as before."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", _PIPE_WRITER, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"line 0\n"
    if mode != "other":
        proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    if mode == "quiet":
        assert (proc.returncode, err) == (141, "")
    else:
        assert "BrokenPipeError" in err and proc.returncode == 1
        assert ("a worker's pipe" in err) == (mode == "other")


def test_every_command_entry_point_ends_quietly_on_a_closed_pipe():
    """Every example and sweep goes through one of these entry points; each carries the wrapper."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    import _study
    import compare_runs
    from npvae import sweep, train as train_module
    from npvae.config import quiet_broken_pipe
    for entry in (train_module.main, sweep.command_main, _study.run, compare_runs.main):
        assert entry.__code__ is quiet_broken_pipe(lambda: 0).__code__, entry
