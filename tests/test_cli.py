"""The command line: the README's main job end to end, and clear errors for bad input."""

import re
from pathlib import Path

import pytest

from srunet.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_main_job() -> str:
    """The third command of the README's opening block: the main job."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 3, "README must open with install, test and main-job commands"
    return commands[2]


@pytest.mark.slow
def test_readme_main_job_ends_with_a_validated_package(tmp_path, monkeypatch, capsys):
    # Same subcommands and options as the README, made tiny: fewer pairs and steps.
    main_job = readme_main_job()
    steps = [part.strip() for part in main_job.split("&&")]
    assert [s.split()[1] for s in steps] == ["simulate", "train", "package"]
    monkeypatch.chdir(tmp_path)
    tiny = {"simulate": ["--pairs", "4"],
            "train": ["train.max_steps=2", "train.batch_size=4",
                      "model.depth=2", "model.base_channels=8", "data.tile_size=32",
                      "data.val_fraction=0.25"],
            "package": []}
    for attempt in ("first run", "re-run"):  # the documented command must be re-runnable
        for step in steps:
            argv = step.split()[1:]
            argv = [a for i, a in enumerate(argv) if not (argv[i - 1] == "--pairs" or a == "--pairs")]
            assert main(argv + tiny[argv[0]]) == 0, f"{attempt}: {step}"
    out = capsys.readouterr().out
    assert "MLflow store: sqlite:///" in out and "best checkpoint:" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert re.search(r"step \d+: val PSNR [\d.]+ dB \(bicubic [\d.]+ dB\), best so far", out)
    assert "package written and validated" in out
    package = Path("runs/demo/package")
    assert (package / "rdf.yaml").is_file()
    assert Path("runs/demo/mlflow.db").is_file()


def test_bad_input_gives_a_clear_error_and_exit_code(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "file").write_text("x")
    assert main(["simulate", str(tmp_path / "occupied"), "--pairs", "1"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "train.max_steps=zero"]) == 2
    assert "train.max_steps" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "train.epochs=3"]) == 2  # v2's key
    err = capsys.readouterr().err
    assert "train.epochs" in err and "train.max_steps" in err


def test_readme_main_job_reruns_its_first_step(tmp_path, monkeypatch, capsys):
    # Fast half of the re-run check: the simulate step twice, exactly as documented, made tiny.
    simulate = readme_main_job().split("&&")[0].split()[1:]
    assert "--overwrite" in simulate and "--overwrite" in readme_main_job().split("&&")[2]
    monkeypatch.chdir(tmp_path)
    argv = [a for i, a in enumerate(simulate) if not (simulate[i - 1] == "--pairs" or a == "--pairs")]
    for _ in range(2):
        assert main(argv + ["--pairs", "1", "--workers", "1"]) == 0
    assert len(list(Path("runs/demo/data/lr").iterdir())) == 1


def test_output_errors_are_one_line_without_errno(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert main(["predict", str(tmp_path / "a.tif"), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[Errno" not in err and "is a file, not a folder" in err


def test_old_register_command_points_to_registry(capsys):
    assert main(["register", "--name", "x", "--store", "runs/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`srunet registry`" in err and "srunet pairs" in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("x")
    for argv in (["--debug", "predict", "a.tif", "--out", str(taken)],
                 ["predict", "a.tif", "--out", str(taken), "--debug"]):
        with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
            main(argv)
    assert main(["predict", "a.tif", "--out", str(taken)]) == 2  # without it: one line


def test_every_option_has_a_help_text():
    import argparse

    from srunet.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, command in [("srunet", parser), *sub.choices.items()]
               for action in command._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
               and not (action.help or "").strip()]
    assert not missing, f"options without a help text: {missing}"
    assert all(choice.help for choice in sub._choices_actions)  # each command's line in --help
