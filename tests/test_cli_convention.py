"""One convention for every ``os2d`` command: ``--output FILE`` / ``--output-dir DIR`` / ``--quiet``, old spellings
that warn and still work, ``--max-detections 0`` = no cap, user errors vs bugs, early writability checks, and a
parser that imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import scene_with, textured_object

from os2d.apps.cli.common import CliError, check_writable_dir, check_writable_file
from os2d.apps.cli.main import build_parser, main
from os2d.errors import Os2dError


def _help(capsys: pytest.CaptureFixture[str], command: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(("command", "output_flag"), [
    (["detect"], "--output"),
    (["plot-log"], "--output"),
    (["weights", "compact"], "--output"),
    (["weights", "calibrate"], "--output"),
    (["demo"], "--output-dir"),
    (["eval"], "--output-dir"),
    (["synth"], "--output-dir"),
    (["pretrain-transform"], "--output-dir"),
    (["train"], "--output-dir"),
    (["finetune"], "--output-dir"),
    (["train-detector"], "--output-dir"),
    (["weights", "download"], "--output-dir"),
    (["weights", "import"], "--output-dir"),
    (["export"], "--onnx"),  # two files, each named by what it holds
    (["serve"], "--data-dir"),  # a store the service reads and writes
])
def test_every_command_has_the_output_and_quiet_flags(capsys, command, output_flag):
    text = _help(capsys, command)
    assert f"  {output_flag} " in text and "--quiet, -q" in text
    other = {"--output": "--output-dir", "--output-dir": "--output "}.get(output_flag)
    if other:  # a command writes either a file or a folder, and says which
        assert other not in text
    assert "--out " not in text and "--dir " not in text and "--no-progress" not in text  # old spellings hidden


@pytest.mark.parametrize(("old", "new", "message"), [
    (["detect", "x.jpg", "--out", "o.json"], ["detect", "x.jpg", "--output", "o.json"], "--out is deprecated; use --output"),
    (["demo", "--output", "d"], ["demo", "--output-dir", "d"], "--output is deprecated; use --output-dir"),
    (["eval", "--out", "d"], ["eval", "--output-dir", "d"], "--out is deprecated; use --output-dir"),
    (["synth", "--class-images", "c", "--backgrounds", "b", "--out", "d"],
     ["synth", "--class-images", "c", "--backgrounds", "b", "--output-dir", "d"],
     "--out is deprecated; use --output-dir"),
    (["pretrain-transform", "--images", "p", "--out", "d"], ["pretrain-transform", "--images", "p", "--output-dir", "d"],
     "--out is deprecated; use --output-dir"),
    (["pretrain-transform", "--images", "p", "--output-dir", "d", "--no-progress"],
     ["pretrain-transform", "--images", "p", "--output-dir", "d", "-q"], "--no-progress is deprecated; use --quiet"),
    (["train", "a=1", "--output", "d", "b=2"], ["train", "a=1", "--output-dir", "d", "b=2"],
     "--output is deprecated; use --output-dir"),
    (["train", "-o", "d"], ["train", "--output-dir", "d"], "-o is deprecated; use --output-dir"),
    (["plot-log", "log.jsonl", "--out", "c.png"], ["plot-log", "log.jsonl", "-o", "c.png"],
     "--out is deprecated; use --output"),
    (["weights", "download", "w", "--dir", "d"], ["weights", "download", "w", "--output-dir", "d"],
     "--dir is deprecated; use --output-dir"),
    (["weights", "import", "w.pth", "--dir", "d"], ["weights", "import", "w.pth", "--output-dir", "d"],
     "--dir is deprecated; use --output-dir"),
    (["weights", "compact", "w.pt", "small.pt"], ["weights", "compact", "w.pt", "--output", "small.pt"],
     "OUT as a positional argument is deprecated; use --output OUT"),
])
def test_old_spellings_parse_the_same_with_one_warning(capsys, old, new, message):
    parser = build_parser()
    assert parser.parse_args(old) == parser.parse_args(new)
    assert capsys.readouterr().err == f"os2d: warning: {message}\n"


def test_required_output_accepts_the_old_spelling_only_once(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval"])
    assert "--output-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--out", "a", "--output-dir", "b"])
    assert "not allowed with" in capsys.readouterr().err


# --------------------------------------------------------------------------------- runs with files


@pytest.fixture
def files(tmp_path: Path) -> Path:
    obj = textured_object((64, 80), seed=3)
    obj.save(tmp_path / "A.png")
    textured_object((64, 80), seed=7).save(tmp_path / "B.png")
    scene_with(obj, [(10, 10), (120, 60)], size=(200, 150), seed=1).save(tmp_path / "a.png")
    (tmp_path / "boxes.csv").write_text("image,class,x1,y1,x2,y2\na.png,A,10,10,74,90\na.png,A,120,60,184,140\n")
    (tmp_path / "classes.csv").write_text("name,path\nA,A.png\nB,B.png\n")
    return tmp_path


def _detect(files: Path, out: Path, *extra: str) -> list[str]:
    return ["detect", str(files / "a.png"), "--classes", str(files / "classes.csv"), "--output", str(out),
            "--image-size", "0", "-q", *extra]


def test_detect_max_detections_zero_means_no_cap(files):
    assert main(_detect(files, files / "all.jsonl", "--max-detections", "0")) == 0
    assert main(_detect(files, files / "one.json", "--max-detections", "1")) == 0
    header, record = [json.loads(line) for line in (files / "all.jsonl").read_text().splitlines()]
    assert header["config"]["max_detections"] is None
    assert len(record["detections"]) > 1
    capped = json.loads((files / "one.json").read_text())["images"][0]["detections"]
    assert capped == record["detections"][:1]


def _eval(files: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--boxes", str(files / "boxes.csv"), "--classes", str(files / "classes.csv"), "--method",
            "sliding-ar", "--image-size", "200", "--no-plots", "--output-dir", str(out), "-q", *extra]


def test_eval_max_detections_zero_means_no_cap(files):
    assert main(_eval(files, files / "all", "--max-detections", "0")) == 0
    assert main(_eval(files, files / "one", "--max-detections", "1")) == 0
    config = json.loads((files / "all" / "metrics.json").read_text())["config"]["inference"]
    assert config["max_detections"] is None
    everything = [json.loads(line) for line in (files / "all" / "detections.jsonl").read_text().splitlines()]
    one = [json.loads(line) for line in (files / "one" / "detections.jsonl").read_text().splitlines()]
    assert len(everything[-1]["detections"]) > 1 and len(one[-1]["detections"]) == 1


@pytest.mark.parametrize("command", ["detect", "eval"])
def test_negative_max_detections_is_a_user_error(files, capsys, command):
    argv = _detect(files, files / "o.json") if command == "detect" else _eval(files, files / "o")
    assert main([*argv, "--max-detections", "-1"]) == 2
    assert capsys.readouterr().err == "os2d: error: --max-detections must be >= 0 (0 = no cap), got -1\n"


def test_old_spelling_still_runs(files, capsys):
    argv = [a if a != "--output-dir" else "--out" for a in _eval(files, files / "old")]
    assert main(argv) == 0
    assert (files / "old" / "metrics.json").is_file()
    assert capsys.readouterr().err.startswith("os2d: warning: --out is deprecated; use --output-dir\n")


# --------------------------------------------------------------------------------- errors


def test_a_bug_is_a_traceback_not_a_user_error(files, monkeypatch, capsys):
    from os2d.detector import Detector

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(Detector, "from_weights", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(_detect(files, files / "o.json"))
    assert "os2d: error" not in capsys.readouterr().err


def test_user_errors_are_one_line_exit_2(files, capsys):
    assert issubclass(CliError, Os2dError)
    assert main(_detect(files, files / "o.json", "--device", "nonsense")) == 2
    err = capsys.readouterr().err
    assert err.startswith("os2d: error: --device nonsense") and err.count("\n") == 1
    assert main(["plot-log", str(files / "missing.jsonl"), "-o", str(files / "c.png")]) == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--output", "{dir}"], "--output {dir} is a folder"),
    (["--output", "{file}/o.json"], "is not a folder"),
    (["--draw", "{file}"], "--draw {file} exists and is not a folder"),
    (["--save-gallery", "{file}/sub/g.pt"], "is not a folder"),
])
def test_detect_checks_outputs_before_any_work(files, monkeypatch, capsys, extra, message):
    from os2d.detector import Detector

    monkeypatch.setattr(Detector, "from_weights", lambda *a, **k: pytest.fail("loaded the model"))
    (files / "plain").write_text("")
    fill = {"dir": files, "file": files / "plain"}
    argv = [*_detect(files, files / "o.json"), *(a.format(**fill) for a in extra)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("os2d: error:") and message.format(**fill) in err


def test_writability_checks(tmp_path):
    check_writable_file(tmp_path / "new" / "deeper" / "o.json", "--output")  # missing folders are created
    check_writable_dir(tmp_path / "new" / "run", "--output-dir")
    check_writable_dir(tmp_path, "--output-dir")
    check_writable_file(None, "--output")
    (tmp_path / "f").write_text("")
    with pytest.raises(CliError, match="is a folder"):
        check_writable_file(tmp_path, "--output")
    with pytest.raises(CliError, match="is not a folder"):
        check_writable_file(tmp_path / "f" / "x" / "o.json", "--output")
    with pytest.raises(CliError, match="exists and is not a folder"):
        check_writable_dir(tmp_path / "f", "--output-dir")
    with pytest.raises(CliError, match="is not a folder"):
        check_writable_dir(tmp_path / "f" / "run", "--output-dir")


def test_the_parser_imports_no_torch():
    code = ("import sys\nimport os2d.apps.cli.main as m\nm.build_parser()\n"
            "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "import os2d\nassert 'torch' not in sys.modules\nassert os2d.InferenceConfig().max_detections == 100\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: os2d" in proc.stdout


def test_serve_passes_the_shortlist_and_precision_to_the_service(tmp_path, monkeypatch):
    """`os2d serve --shortlist K --heads-precision int8 --colour-rescore 0.5 --verify-rescore 0 --refine-top 4` reach ServiceSettings (uvicorn and the app are stubbed: no server starts)."""
    pytest.importorskip("uvicorn")
    import uvicorn

    import os2d.apps.service.app as service_app

    seen = {}
    monkeypatch.setattr(service_app, "create_app", lambda settings: seen.setdefault("settings", settings))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.setdefault("run", kw))
    assert main(["serve", "--data-dir", str(tmp_path / "data"), "--shortlist", "3", "-q", "--port", "8123",
                 "--heads-precision", "int8", "--colour-rescore", "0.5", "--verify-rescore", "0",
                 "--refine-top", "4", "--trunk-precision", "bf16", "--verify-precision", "bf16"]) == 0
    assert seen["settings"].shortlist_top_k == 3
    assert (seen["settings"].trunk_precision, seen["settings"].verify_precision) == ("bf16", "bf16")
    assert (seen["settings"].verify_rescore, seen["settings"].refine_top) == (0.0, 4)
    assert seen["settings"].heads_precision == "int8"
    assert seen["settings"].colour_rescore == 0.5
    assert seen["run"]["port"] == 8123


def test_serve_fast_sets_every_precision_unless_given(tmp_path, monkeypatch):
    """`os2d serve --fast` reaches ServiceSettings as int8 heads and bf16 trunk and crops; an explicit option wins;
    without either the service keeps the library's default heads (int8-exact)."""
    pytest.importorskip("uvicorn")
    import uvicorn

    import os2d.apps.service.app as service_app

    seen: list = []
    monkeypatch.setattr(service_app, "create_app", lambda settings: seen.append(settings))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    base = ["serve", "--data-dir", str(tmp_path / "data"), "-q", "--port", "8123"]
    assert main([*base, "--fast"]) == 0
    assert main([*base, "--fast", "--heads-precision", "fp32"]) == 0
    assert main(base) == 0
    got = [(s.heads_precision, s.trunk_precision, s.verify_precision) for s in seen]
    assert got == [("int8", "bf16", "bf16"), ("fp32", "bf16", "bf16"), ("int8-exact", None, None)]
