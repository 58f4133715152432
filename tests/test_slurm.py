"""`zray slurm`: every value checked and quoted, the script checked by bash, written whole or not at all.

No Ray and no SLURM needed: the script is only written and read here
(tests/test_launch.py submits one to a real one-node SLURM cluster).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from zray import slurm
from zray.cli import main
from zray.errors import ZrayError

SPACE = str(Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml")
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _slurm(tmp_path, monkeypatch, *args, shared=None):
    """Run `zray slurm` in tmp_path; the result, the script's path and the files it left."""
    monkeypatch.chdir(tmp_path)
    if shared is None:
        shared = tmp_path / "shared"
        shared.mkdir(exist_ok=True)
    out = tmp_path / "job.sbatch"
    before = _tree(tmp_path)
    result = CliRunner().invoke(main, ["slurm", SPACE, "--shared", str(shared), "--out", str(out), *args])
    return result, out, _tree(tmp_path) - before


def _refused(result, new_files) -> str:
    """The one error sentence of a refusal that wrote nothing."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("zray: error: ")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    assert new_files == set(), new_files
    return errors[0].removeprefix("zray: error: ")


def test_nodes_share_the_concurrent_trials_and_idle_ones_are_warned_about(tmp_path, monkeypatch):
    """Four nodes for a search of one trial at a time: three would sit idle, said so; with eight
    concurrent trials each node is asked for two trials' CPUs (2 x (0.9 + 0.1) + 1 for Ray Data),
    not all eight's."""
    result, out, _ = _slurm(tmp_path, monkeypatch, "--nodes", "4")
    assert result.exit_code == 0, result.output
    assert ("zray: warning: tune.max_concurrent is 1: at most 1 trial(s) run at once, so 3 of the 4 nodes would "
            "sit idle; --set tune.max_concurrent=4 (or a multiple) uses them all") in result.output
    result, out, _ = _slurm(tmp_path, monkeypatch, "--nodes", "4", "--set", "tune.max_concurrent=8", "--overwrite")
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    assert "#SBATCH --cpus-per-task=3\n" in out.read_text() and "4 node(s), 3 CPUs each" in result.output
    result, out, _ = _slurm(tmp_path, monkeypatch, "--set", "tune.max_concurrent=8", "--overwrite")
    assert "#SBATCH --cpus-per-task=9\n" in out.read_text()  # one node holds all eight


def test_a_newline_in_time_is_refused(tmp_path, monkeypatch):
    result, out, new = _slurm(tmp_path, monkeypatch, "--time", "1:00\nrm -rf ~")
    assert _refused(result, new) == (
        "--time '1:00\\nrm -rf ~': expected a SLURM time limit such as 24:00:00 or 2-00:00:00")


@pytest.mark.parametrize("value", ["90", "30:00", "24:00:00", "2-12", "2-12:30", "2-00:00:00", "UNLIMITED"])
def test_slurm_time_formats_are_accepted(value):
    assert slurm.check_time(value) == value


@pytest.mark.parametrize("value", ["1h", "24:00:00 ", "1:2:3:4", "-5", "2-", "24:00:00\n"])
def test_other_times_are_refused(value):
    with pytest.raises(ZrayError, match="expected a SLURM time limit"):
        slurm.check_time(value)


@pytest.mark.parametrize("value", ["gpu;reboot", "$(id)", "gpu cpu", "`id`", "gpu\n#SBATCH --x"])
def test_shell_metacharacters_in_partition_are_refused(tmp_path, monkeypatch, value):
    result, out, new = _slurm(tmp_path, monkeypatch, "--partition", value)
    assert _refused(result, new) == (
        f"--partition {value!r}: expected a SLURM partition name (letters, digits, '_', '-', '.'), "
        "or several separated by commas, such as gpu or gpu,cpu")


def test_a_partition_list_is_accepted(tmp_path, monkeypatch):
    result, out, new = _slurm(tmp_path, monkeypatch, "--partition", "gpu_a100,cpu-long.x")
    assert result.exit_code == 0, result.output
    assert "#SBATCH --partition=gpu_a100,cpu-long.x\n" in out.read_text()


@pytest.mark.parametrize("option", ["--port", "--dashboard-port"])
@pytest.mark.parametrize("value", ["99999", "0"])
def test_ports_outside_1_to_65535_are_refused(tmp_path, monkeypatch, option, value):
    result, out, new = _slurm(tmp_path, monkeypatch, option, value)
    assert result.exit_code == 2, result.output  # click's own usage error, like every range option of zray
    assert f"Invalid value for '{option}': {value} is not in the range 1<=x<=65535." in result.output
    assert new == set()


def test_the_heads_port_and_the_dashboards_must_differ_and_shared_must_name_a_folder(tmp_path, monkeypatch):
    result, out, new = _slurm(tmp_path, monkeypatch, "--port", "8265")  # the dashboard's default
    assert result.exit_code == 1, result.output
    assert ("--port 8265 and --dashboard-port 8265: Ray's head and its dashboard cannot share a port; expected two "
            "different ports") in result.output
    assert new == set()
    result = CliRunner().invoke(main, ["slurm", SPACE, "--shared", " ", "--out", str(tmp_path / "job.sbatch")])
    assert result.exit_code == 2 and "Invalid value for '--shared': expected a folder every node" in result.output
    assert not (tmp_path / "job.sbatch").exists()


def test_a_port_is_checked_for_library_callers_too():
    with pytest.raises(ZrayError, match=r"^--port 99999: expected a port number from 1 to 65535$"):
        slurm.check_port("--port", 99999)


@needs_bash
def test_a_shared_path_with_a_space_works_and_is_quoted(tmp_path, monkeypatch):
    shared = tmp_path / "my shared"
    shared.mkdir()
    result, out, new = _slurm(tmp_path, monkeypatch, shared=shared)
    assert result.exit_code == 0, result.output
    assert new == {"job.sbatch"}
    text = out.read_text()
    assert f"SHARED='{shared}'\n" in text
    assert f'#SBATCH --output="{shared}/zray-quickstart-%j.out"\n' in text  # sbatch's own quoting
    assert subprocess.run(["bash", "-n", str(out)], capture_output=True).returncode == 0
    assert out.stat().st_mode & 0o111


@needs_bash
def test_variable_lines_give_back_the_exact_strings(tmp_path, monkeypatch):
    """Paths with spaces, `$`, quotes and `~` inside, and ray flags with spaces, read back by bash."""
    shared = tmp_path / "sh ared $HOME 'q' \"d\" `id` 50%"
    shared.mkdir()
    venv = str(tmp_path / "v env $(id) ~x")  # missing here: a warning, not a refusal
    ray_args = "--object-store-memory=10 --resources='{\"a b\": 1}' --x=$HOME"
    result, out, new = _slurm(tmp_path, monkeypatch, "--venv", venv, "--ray-args", ray_args, shared=shared)
    assert result.exit_code == 0, result.output
    lines = [line for line in out.read_text().splitlines() if line.startswith(("SHARED=", "VENV=", "RAY_ARGS="))]
    assert len(lines) == 3, lines
    echo = 'printf "%s\\n" "$SHARED" "$VENV" "${RAY_ARGS[@]}"'
    back = subprocess.run(["bash", "-c", "\n".join([*lines, echo])], capture_output=True, text=True, check=True)
    assert back.stdout.splitlines() == [str(shared), venv, "--object-store-memory=10", '--resources={"a b": 1}',
                                        "--x=$HOME"]


@needs_bash
def test_a_venv_under_home_stays_under_each_nodes_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home of node"))
    result, out, new = _slurm(tmp_path, monkeypatch, "--venv", "~/zray venv")
    assert result.exit_code == 0, result.output
    line = next(line for line in out.read_text().splitlines() if line.startswith("VENV="))
    back = subprocess.run(["bash", "-c", f'{line}\nprintf "%s" "$VENV"'], capture_output=True, text=True)
    assert back.stdout == str(tmp_path / "home of node" / "zray venv")


def test_a_venv_without_python_is_refused(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    venv.mkdir()
    result, out, new = _slurm(tmp_path, monkeypatch, "--venv", str(venv))
    assert _refused(result, new) == (
        f"--venv {venv}: no bin/python there; expected a virtual environment with zray installed")


def test_a_venv_without_zray_is_refused(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for program in ("python", "ray"):
        (venv / "bin" / program).touch()
    result, out, new = _slurm(tmp_path, monkeypatch, "--venv", str(venv))
    assert _refused(result, new) == (
        f"--venv {venv}: no bin/zray there; expected a virtual environment with zray installed")


def test_a_missing_venv_is_a_warning(tmp_path, monkeypatch):
    venv = tmp_path / "on-the-nodes-only"
    result, out, new = _slurm(tmp_path, monkeypatch, "--venv", str(venv))
    assert result.exit_code == 0, result.output
    assert f"zray: warning: --venv {venv} does not exist on this machine; it must exist on every node" \
        in result.stderr.splitlines()
    assert new == {"job.sbatch"}
    assert f"VENV={venv}\n" in out.read_text()


def test_a_missing_shared_folder_is_a_warning(tmp_path, monkeypatch):
    shared = tmp_path / "scratch"
    result, out, new = _slurm(tmp_path, monkeypatch, shared=shared)
    assert result.exit_code == 0, result.output
    assert f"zray: warning: --shared {shared} does not exist on this machine; it must exist on every node" \
        in result.stderr.splitlines()
    assert new == {"job.sbatch"}


def test_a_shared_file_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "a-file"
    shared.write_text("")
    result, out, new = _slurm(tmp_path, monkeypatch, shared=shared)
    assert _refused(result, new) == (
        f"--shared {shared}: is not a folder; expected a folder every node of the allocation sees")


def test_a_backslash_in_shared_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "a\\b"
    result, out, new = _slurm(tmp_path, monkeypatch, shared=shared)
    assert _refused(result, new) == (
        f"--shared {shared}: a backslash makes SLURM ignore the %j in the job's output file name; "
        "expected a folder path without backslashes")


@pytest.mark.parametrize("option", ["--venv", "--set"])
def test_control_characters_are_refused(tmp_path, monkeypatch, option):
    from zray import config

    value = "tune.seed=1\nrm -rf ~" if option == "--set" else "/opt/v\x00env"
    space = config.load(SPACE)
    monkeypatch.setattr(config, "load", lambda *a, **k: space)  # the script, not the loader, is under test
    result, out, new = _slurm(tmp_path, monkeypatch, option, value)
    assert _refused(result, new) == (
        f"{option} {value!r}: expected a value without newlines, NUL or other control characters")


def test_unparseable_ray_args_are_refused(tmp_path, monkeypatch):
    result, out, new = _slurm(tmp_path, monkeypatch, "--ray-args", "--resources='{\"a\": 1}")
    assert _refused(result, new) == (
        "--ray-args '--resources=\\'{\"a\": 1}': cannot be split like a shell command line (No closing "
        "quotation); expected `ray start` flags such as --object-store-memory=2000000000")


def test_an_out_folder_that_is_missing_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared").mkdir()
    out = tmp_path / "nope" / "job.sbatch"
    result = CliRunner().invoke(main, ["slurm", SPACE, "--shared", "shared", "--out", str(out)])
    assert _refused(result, set()) == (
        f"--out {out}: the folder {out.parent} does not exist; expected an existing folder")


@needs_bash
def test_a_script_that_fails_bash_n_is_not_written(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm, "batch_script", lambda *a, **k: "#!/bin/bash\nif then\n")
    result, out, new = _slurm(tmp_path, monkeypatch)
    sentence = _refused(result, new)
    assert sentence.startswith("the batch script failed `bash -n` (")
    assert sentence.endswith("); expected valid bash, so nothing was written (a bug in zray: please report "
                             "it with the command line)")


def test_without_bash_the_syntax_check_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no bash on the PATH
    assert shutil.which("bash") is None
    slurm.check_syntax("if then\n")  # no bash to ask: nothing raised


def test_a_failed_write_leaves_neither_script_nor_temporary_file(tmp_path):
    """A real failed write: the file-size limit of the writing process (RLIMIT_FSIZE,
    in a process of its own) is below the script's size, so the write fails with
    EFBIG ("File too large"), as on a full disk."""
    code = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from zray import slurm
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an OSError, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
        try:
            slurm.write(Path({str(tmp_path / "job.sbatch")!r}), "#!/bin/bash\\n" + "echo hi\\n" * 100)
        except OSError as e:
            print("FAILED", e.strerror)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "FAILED File too large", done.stdout + done.stderr[-2000:]
    assert _tree(tmp_path) == set()


def test_overwrite_replaces_only_a_script_zray_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = str(Path(__file__).resolve().parents[1] / "search_spaces" / "quickstart.yaml")
    args = ["slurm", space, "--shared", str(tmp_path), "--out", str(tmp_path / "tune.sbatch")]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "already exists (a zray batch script); use --overwrite" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
