"""The command line as a user meets it, through real processes (``python -m evit_export``):
usage errors are typer's usage block with its suggestion and exit 2 (never a
traceback), ``-h`` and ``--version`` work, help reads as sentences, and every ``--json``
output is strict JSON."""
import re
from importlib.metadata import version

import pytest

from evit_export.targets import target_names

from cli_helpers import run_cli, run_cli_process
from evit_export.core.jsonio import loads_strict

WIDE = {"COLUMNS": "250"}  # wide enough that any line break in help is one written in the source


def _env(**extra):
    import os

    return {**os.environ, **extra}


@pytest.mark.parametrize("args, expected", [
    (["exprot"], "No such command 'exprot'. Did you mean one of the export commands: "
                 + ", ".join(target_names()) + "?"),
    (["zzz"], "No such command 'zzz'."),
    (["chek", "m0.onnx"], "Did you mean 'check'?"),
    (["onnx", "--precison", "fp16"], "--precision"),
    (["check"], "Missing argument 'ARTIFACT'"),
    (["parity"], "Missing argument 'ARTIFACT...'"),
    (["fold", "--variant", "m0"], "Missing option '--out'"),
    (["models", "--img-size", "big"], "Invalid value for '--img-size'"),
    (["check", "m0.onnx", "--nativ"], "--native"),
])
def test_usage_errors_show_usage_and_exit_2(args, expected):
    proc = run_cli_process(*args, timeout=120, env=_env(**WIDE))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Usage: evit-export" in proc.stderr, proc.stderr
    assert expected in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["check", "-h"], ["parity", "-h"], ["fold", "-h"]])
def test_help(args):
    proc = run_cli_process(*args, timeout=120, env=_env(**WIDE))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith("Usage: evit-export")
    assert not proc.stderr


def test_version():
    proc = run_cli_process("--version", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"evit-export {version('evit-export')}"


def _commands_panel(text: str) -> list[str]:
    rows = text.split("Commands")[1].splitlines()[1:]
    return [r.strip("│ ") for r in rows if r.startswith("│")]


def test_commands_in_workflow_order_one_line_each():
    proc = run_cli_process("-h", timeout=120, env=_env(**WIDE))
    rows = _commands_panel(proc.stdout)
    names = [r.split()[0] for r in rows if r and not r.startswith(" ")]
    workflow = ["train", "fold", "onnx", "coreml", "tflite", "check", "parity", "bench", "package", "demo", "models",
                "inspect"]
    assert [n for n in names if n in workflow] == workflow, names
    # at 250 columns nothing wraps: a second line under a command is a hard break in its docstring
    assert len(rows) == len(names), "\n".join(rows)


@pytest.mark.parametrize("command", ["check", "inspect", "parity", "models", "fold"])
def test_help_metavars_read_as_words(command):
    proc = run_cli_process(command, "-h", timeout=120, env=_env(**WIDE))
    text = proc.stdout
    assert not re.search(r"<(bool|str|int|float|path)>", text.split("--help")[0]), text
    # the description's paragraphs are single lines in the source: nothing breaks mid-sentence
    description = text.split("╭")[0].strip().splitlines()[1:]
    assert all(line.strip() == "" or len(line.strip()) > 30 or line.strip().endswith(".")
               for line in description), description


def test_defaults_are_not_cut_off_in_a_narrow_terminal():
    proc = run_cli_process("check", "-h", timeout=120, env=_env(COLUMNS="80"))
    flat = re.sub(r"[│\s]+", " ", proc.stdout)
    assert "[default: 32]" in flat, proc.stdout
    assert "[default: 0]" in flat, proc.stdout


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    import evit_export

    model = evit_export.load_model("m0", img_size=64, num_classes=10, labels=[str(i) for i in range(10)], seed=0)
    return evit_export.export(model, "onnx", out=tmp_path_factory.mktemp("cli") / "m0.onnx").path


def test_user_error_speaks_flags_on_the_command_line(onnx_artifact):
    """The API says ``variant=``; the command line shows the same error with ``--variant``."""
    proc = run_cli_process("check", onnx_artifact, "--variant", "m1", timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "leave --variant out" in lines[0], proc.stderr
    assert "variant=" not in lines[0], proc.stderr
    proc = run_cli_process("check", onnx_artifact, "-n", "0", timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "--random-inputs 0: need at least one input" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [["check", "-n", "2"], ["inspect"], ["parity", "--limit", "20"],
                                  ["models", "--img-size", "64", "--num-classes", "10"]])
def test_json_output_is_strict(args, onnx_artifact, capsys):
    args = args[:1] + ([] if args[0] == "models" else [onnx_artifact]) + args[1:] + ["--json"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert loads_strict(out), args


def test_python_parameter_names_become_the_commands_flags():
    from evit_export.cli import _register_commands, cli_message

    _register_commands()
    message = "not m1: leave variant= out; pass images=DIR or checkpoint= with the weights; n=0; copy=2"
    assert cli_message(message, ["check", "-c", "ck.pth", "a.onnx"]) == (
        "not m1: leave --variant out; pass --images DIR or --checkpoint with the weights; --random-inputs 0; copy=2")
    assert cli_message("data=DIR", ["parity", "a.onnx"]) == "--data DIR"
    assert cli_message("data=DIR", ["check", "a.onnx"]) == "data=DIR"  # not a check option: left as written


def _all_commands():
    import typer

    from evit_export.cli import _register_commands, app

    _register_commands()
    root = typer.main.get_command(app)
    found = []

    def walk(command, path):
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, path + [name])
        else:
            found.append((path, command))

    walk(root, [])
    return found


def test_help_at_80_columns_keeps_words_whole_and_descriptions_wide(capsys, monkeypatch):
    """Issue 19.15: help piped or captured is 80 columns wide. No option name, metavar or
    word of a description is broken across lines, and every description starts within
    the left 40% of the panel, so none is squeezed into a narrow column by the names
    beside it."""
    monkeypatch.setenv("COLUMNS", "80")

    def words(text):
        return [w for w in re.split(r"[\s,/]+", text) if w]

    for path, command in _all_commands():
        code, out, err = run_cli(capsys, *path, "--help")
        assert code == 0, (path, err)
        panel = [line[2:-1] for line in out.splitlines() if line.startswith("│") and line.endswith("│")]
        shown = set(words(" ".join(panel)))
        for param in command.params:
            if getattr(param, "hidden", False):  # old spellings kept as hidden aliases (issue 19.9)
                continue
            expected = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
            expected += words(param.metavar or "") + words(param.help or "")
            missing = [w for w in expected if w not in shown]
            assert not missing, (path, missing, "\n".join(panel))
            if param.metavar:
                assert any(param.metavar in line for line in panel), (path, param.metavar, "\n".join(panel))
        for line in panel:
            if not line.strip():
                continue
            # a continuation line starts at the description column; a first line has the
            # names, two or more spaces, then the description
            start = len(line) - len(line.lstrip(" ")) if line.startswith(" ") else None
            gap = re.search(r"\S\s{2,}(?=\S)", line)
            if start is None and gap:
                start = gap.end()
            assert start is None or start <= 0.4 * 80, (path, line, "\n".join(panel))


def test_bench_options_have_help_and_check_n_has_a_long_form(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    commands = {tuple(p): c for p, c in _all_commands()}
    for name in ("threads", "iterations"):
        param = next(p for p in commands[("bench",)].params if p.name == name)
        assert param.help, name
    n = next(p for p in commands[("check",)].params if p.name == "n")
    assert any(o.startswith("--") for o in n.opts), n.opts


def test_one_precision_vocabulary_on_every_export(capsys):
    """Issue 19.9: --precision on every export command and precision= in every options
    dataclass; the old spellings still work, hidden; a misspelling gets a hint."""
    import dataclasses

    from evit_export.targets import target_class
    from evit_export.targets.coreml import CoreMLOptions
    from evit_export.targets.tflite import TFLiteOptions

    for name in target_names():
        assert "precision" in {f.name for f in dataclasses.fields(target_class(name).options_type)}, name
        code, out, _ = run_cli(capsys, name, "--help")
        assert code == 0
        assert "--precision" in out, name
    assert TFLiteOptions(precision="int8", calibration_data="random").precision == "int8"
    assert TFLiteOptions(quantize="fp16").precision == "fp16"  # the old name, from Python
    assert TFLiteOptions(quantize="none").precision == "fp32"
    int8_weights = CoreMLOptions(precision="int8")
    assert str(int8_weights.compress) == "int8", int8_weights  # CoreML: int8 weights on fp16 activations
    code, out, _ = run_cli(capsys, "tflite", "--help")
    assert "--quantize" not in out  # hidden alias
    code, _, err = run_cli(capsys, "tflite", "--precison", "int8")
    assert code == 2
    assert "--precision" in err, err  # "did you mean"
    # a value outside the choices names them and suggests the closest, without typer's "Value error,"
    for name in target_names():
        code, _, err = run_cli(capsys, name, "--variant", "m0", "--precision", "int4")
        flat = " ".join(err.replace("│", " ").split())
        assert code == 2, err
        assert "'int4' is not one of" in flat and "did you mean 'int8'?" in flat, err
        assert "Value error" not in flat, err
