"""A SLURM batch script that runs a search on an allocation, following Ray's SLURM pattern.

The script starts a Ray head on the first node of the allocation (``ray start
--head --block`` through ``srun``, in the background), a Ray worker on every
other node, waits until all have joined, then runs ``zray tune`` on the head
node against that cluster, with results in a folder every node shares. Token
authentication: the job writes a fresh token into the shared folder and every
Ray process and the driver use it. When the driver ends, SLURM ends the job
and its Ray processes.

Resources per node come from the search space: CPUs for the concurrent
trials' Train workers plus one for Ray Data and the driver, and GPUs when the
workers ask for them.

Every value the user gives lands in the script checked and quoted, because
the script is run by bash on every node and a stray newline or space would
otherwise become a command or split a path:

* the time limit and the partition must match SLURM's own syntax, the ports
  1-65535, and no value may hold a newline, NUL or other control character;
* values in shell code are quoted with :func:`shlex.quote` (``~`` at the
  start of ``--venv`` becomes ``"$HOME"`` so it still means each node's
  home); ``--ray-args`` is split like a shell command line and each flag
  quoted again into a bash array;
* ``#SBATCH`` lines are read by ``sbatch``, not by bash: its parser takes
  double quotes and backslash escapes, so the job's output path (in the shared
  folder, which may contain spaces) is double-quoted there and a ``%`` in it
  doubled (SLURM's file-name patterns); a backslash is refused, since SLURM
  then ignores the ``%j`` in the file name;
* the finished script must pass ``bash -n`` before it is written (skipped
  where no ``bash`` is on PATH), and it is written whole or not at all.

    >>> from zray import config, slurm
    >>> space = config.load("search_spaces/inception.yaml")          # doctest: +SKIP
    >>> print(slurm.batch_script(space, "search_spaces/inception.yaml", nodes=4,
    ...                          shared="/scratch/zray", venv="~/zray-venv"))   # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
import shlex
import unicodedata
from pathlib import Path

from zray.errors import ZrayError

__all__ = ["batch_script", "check_shared", "check_syntax", "check_venv", "idle_nodes", "node_resources", "write"]

# SLURM's time-limit formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME = re.compile(r"[0-9]+(:[0-9]+){0,2}|[0-9]+-[0-9]+(:[0-9]+){0,2}|infinite|unlimited", re.IGNORECASE)
# A partition name, or a comma-separated list of them (SLURM takes the first that can run the job).
_PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
# Characters that need no quoting on an #SBATCH line.
_SBATCH_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def node_resources(space, nodes: int = 1) -> tuple[int, int]:
    """(CPUs, GPUs) each of ``nodes`` needs to host its share of the search's concurrent trials
    (``tune.max_concurrent`` spread over the nodes, at least one whole trial) plus Ray Data."""
    r = space.resources
    trials = math.ceil(space.tune.max_concurrent / max(int(nodes), 1))
    cpus = math.ceil(trials * (r.num_workers * r.cpus_per_worker + r.trial_cpus)) + 1
    gpus = math.ceil(trials * r.num_workers * r.gpus_per_worker)
    return cpus, gpus


def idle_nodes(space, nodes: int) -> str | None:
    """A warning where more nodes are asked for than the search's concurrent trials can use."""
    trials = space.tune.max_concurrent
    if nodes <= trials:
        return None
    return (f"tune.max_concurrent is {trials}: at most {trials} trial(s) run at once, so {nodes - trials} of the "
            f"{nodes} nodes would sit idle; --set tune.max_concurrent={nodes} (or a multiple) uses them all")


def batch_script(space, space_file: str, *, nodes: int = 1, shared: str, venv: str, workdir: str,
                 time_limit: str = "24:00:00", partition: str | None = None, port: int = 6379,
                 dashboard_port: int = 8265, ray_args: str = "", overrides: tuple[str, ...] = (),
                 cpus: int | None = None, gpus: int | None = None) -> str:
    """The text of the batch script (see the module docstring); a bad value is a :class:`ZrayError`."""
    _check_values(space_file=space_file, shared=shared, venv=venv, workdir=workdir, time_limit=time_limit,
                  partition=partition, port=port, dashboard_port=dashboard_port, overrides=overrides)
    ray_flags = " ".join(shlex.quote(flag) for flag in split_ray_args(ray_args))
    need_cpus, need_gpus = node_resources(space, nodes)
    cpus, gpus = cpus or need_cpus, need_gpus if gpus is None else gpus
    q = shlex.quote
    sets = " ".join(f"--set {q(o)}" for o in overrides)
    output = _sbatch_word(shared.replace("%", "%%") + f"/zray-{space.name}-%j.out")
    # "${RAY_ARGS[@]+...}": an empty array under `set -u` is an error in bash before 4.4.
    ray_args_expansion = '${RAY_ARGS[@]+"${RAY_ARGS[@]}"}'
    lines = [
        "#!/bin/bash",
        f"# zray search {space.name} on a SLURM allocation (written by `zray slurm`).",
        "# Ray's SLURM pattern: the head on the first node, a worker on each other node,",
        "# the zray driver on the head node; results in SHARED, seen by every node.",
        f"#SBATCH --job-name=zray-{space.name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --cpus-per-task={cpus}",
        *([f"#SBATCH --gpus-per-task={gpus}"] if gpus else []),
        f"#SBATCH --time={time_limit}",
        *([f"#SBATCH --partition={partition}"] if partition else []),
        f"#SBATCH --output={output}",
        "set -euo pipefail",
        "",
        "# A folder every node sees: the token and the results.",
        f"SHARED={q(shared)}",
        "# The virtual environment zray is installed in, on every node.",
        f"VENV={_shell_path(venv)}",
        f"PORT={port}",
        f"DASHBOARD_PORT={dashboard_port}",
        "# Extra `ray start` flags (ports, object store size), one array element each.",
        f"RAY_ARGS=({ray_flags})",
        f"cd {q(workdir)}",
        "",
        'nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))',
        "head_node=${nodes[0]}",
        'head_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk \'{print $1}\')',
        "export RAY_ADDRESS=$head_ip:$PORT",
        "# Token authentication for every Ray process and the driver of this job.",
        'export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$SHARED/.ray-token-$SLURM_JOB_ID"',
        '(umask 077; "$VENV/bin/python" -c "import secrets; print(secrets.token_hex(32), end=\'\')" '
        '> "$RAY_AUTH_TOKEN_PATH")',
        'TMP="/tmp/zray-ray-$SLURM_JOB_ID"',
        "",
        'echo "zray: Ray head on $head_node ($RAY_ADDRESS), $SLURM_JOB_NUM_NODES node(s)"',
        'srun --nodes=1 --ntasks=1 -w "$head_node" "$VENV/bin/ray" start --head --block '
        '--node-ip-address="$head_ip" --port="$PORT" --dashboard-port="$DASHBOARD_PORT" '
        f'--num-cpus="$SLURM_CPUS_PER_TASK" --temp-dir="$TMP/head" --disable-usage-stats {ray_args_expansion} &',
        'for i in $(seq 120); do "$VENV/bin/ray" status --address "$RAY_ADDRESS" >/dev/null 2>&1 && break; '
        "sleep 1; done",
        "for ((i = 1; i < SLURM_JOB_NUM_NODES; i++)); do",
        '  srun --nodes=1 --ntasks=1 -w "${nodes[$i]}" "$VENV/bin/ray" start --block --address="$RAY_ADDRESS" '
        f'--num-cpus="$SLURM_CPUS_PER_TASK" --temp-dir="$TMP/worker$i" --disable-usage-stats {ray_args_expansion} &',
        "done",
        '"$VENV/bin/python" - <<PY',
        "import time, ray",
        "ray.init()",
        "deadline = time.time() + 300",
        "while len([n for n in ray.nodes() if n['Alive']]) < $SLURM_JOB_NUM_NODES and time.time() < deadline:",
        "    time.sleep(1)",
        "print('zray: cluster up:', ray.cluster_resources().get('CPU'), 'CPUs on', "
        "len([n for n in ray.nodes() if n['Alive']]), 'node(s)')",
        "PY",
        "",
        f'"$VENV/bin/zray" tune {q(space_file)} --address "$RAY_ADDRESS" --storage "$SHARED/runs" {sets}'.rstrip(),
        "",
    ]
    return "\n".join(lines)


# --- checking the values ------------------------------------------------------------


def _shown(value: str) -> str:
    """``value`` as a message shows it: quoted and escaped when it has spaces or control characters,
    so that the one-line error stays one line and the value's ends are visible."""
    return value if value.isprintable() and not any(c.isspace() for c in value) and value else repr(value)


def _check_text(option: str, value: str) -> None:
    """Refuse control characters: a newline in a value would end an #SBATCH line or a shell line early."""
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ZrayError(f"{option} {value!r}: expected a value without newlines, NUL or other control characters")


def check_time(value: str) -> str:
    """``value`` if it is a SLURM time limit (it lands on an #SBATCH line, unquoted)."""
    if not _TIME.fullmatch(value):
        raise ZrayError(f"--time {value!r}: expected a SLURM time limit such as 24:00:00 or 2-00:00:00")
    return value


def check_partition(value: str) -> str:
    """``value`` if it is a SLURM partition name or a comma-separated list of them."""
    if not _PARTITION.fullmatch(value):
        raise ZrayError(f"--partition {value!r}: expected a SLURM partition name (letters, digits, '_', '-', '.'), "
                        "or several separated by commas, such as gpu or gpu,cpu")
    return value


def check_port(option: str, value: int) -> int:
    """``value`` if it is a TCP port (the CLI checks this too; a library caller may not)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ZrayError(f"{option} {value!r}: expected a port number from 1 to 65535")
    return value


def split_ray_args(value: str) -> list[str]:
    """``--ray-args`` split as a shell would split it, so each flag can be quoted again on its own."""
    _check_text("--ray-args", value)
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ZrayError(f"--ray-args {value!r}: cannot be split like a shell command line ({exc}); expected "
                        "`ray start` flags such as --object-store-memory=2000000000") from None


def _check_values(*, space_file, shared, venv, workdir, time_limit, partition, port, dashboard_port,
                  overrides) -> None:
    """Every value that lands in the script, checked before any of it is written."""
    check_time(time_limit)
    if partition is not None:
        check_partition(partition)
    check_port("--port", port)
    check_port("--dashboard-port", dashboard_port)
    if port == dashboard_port:  # the head would fail to start, once the job has waited in the queue
        raise ZrayError(f"--port {port} and --dashboard-port {dashboard_port}: Ray's head and its dashboard "
                        "cannot share a port; expected two different ports")
    if not str(shared).strip():
        raise ZrayError("--shared '': expected a folder every node of the allocation sees, such as /scratch/$USER")
    for option, value in [("FILE", space_file), ("--shared", shared), ("--venv", venv),
                          ("the working directory", workdir), *(("--set", o) for o in overrides)]:
        _check_text(option, value)
    if "\\" in shared:
        raise ZrayError(f"--shared {_shown(shared)}: a backslash makes SLURM ignore the %j in the job's output "
                        "file name; expected a folder path without backslashes")


def check_venv(venv: str) -> str | None:
    """Refuse a --venv that exists here but is no virtual environment with zray; a warning if it is missing.

    Clusters often mount paths (home on the nodes, /scratch) that the submit
    host lacks, so a missing folder is only a warning; one that exists here is
    most likely the same one the nodes see, and a typo there would otherwise
    show only once the job has waited in the queue.
    """
    path = Path(venv).expanduser()
    if not path.exists():
        return f"--venv {_shown(venv)} does not exist on this machine; it must exist on every node"
    for program in ("python", "ray", "zray"):
        if not (path / "bin" / program).exists():
            raise ZrayError(f"--venv {_shown(venv)}: no bin/{program} there; expected a virtual environment "
                            "with zray installed")
    return None


def check_shared(shared: str) -> str | None:
    """Refuse a --shared that is a file here; a warning if it is missing (see :func:`check_venv`)."""
    path = Path(shared).expanduser()
    if not path.exists():
        return f"--shared {_shown(shared)} does not exist on this machine; it must exist on every node"
    if not path.is_dir():
        raise ZrayError(f"--shared {_shown(shared)}: is not a folder; expected a folder every node of the "
                        "allocation sees")
    return None


# --- quoting ----------------------------------------------------------------------------


def _shell_path(path: str) -> str:
    """``path`` quoted for bash; a leading ``~`` kept as ``"$HOME"``, the home of the node that runs it."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:]) if path[2:] else '"$HOME"/'
    return shlex.quote(path)


def _sbatch_word(value: str) -> str:
    """``value`` as one word of an #SBATCH line: sbatch (not bash) reads it, splitting at
    whitespace and ``#`` unless double-quoted, with ``\\`` escaping the next character."""
    if _SBATCH_PLAIN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- writing ----------------------------------------------------------------------------


def check_syntax(text: str) -> None:
    """Run ``bash -n`` on the script: the last guard that the quoting above holds.

    It should never fail; if it does, that is a bug in zray, and the script is
    not written. Where no ``bash`` is on PATH (a submit host without it) the
    check is skipped: the script is then only as good as the quoting above.
    """
    import shutil
    import subprocess
    import tempfile

    bash = shutil.which("bash")
    if bash is None:
        return
    with tempfile.TemporaryDirectory(prefix="zray-slurm-") as tmp:
        script = Path(tmp) / "check.sbatch"
        script.write_text(text)
        result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["no message"])[-1].replace(str(script), "script")
        raise ZrayError(f"the batch script failed `bash -n` ({why}); expected valid bash, so nothing was written "
                        "(a bug in zray: please report it with the command line)")


def written_by_slurm(path: Path) -> bool:
    """Whether ``path`` is a batch script of ``zray slurm`` (its second line says so)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = [fh.readline(), fh.readline()]
    except (OSError, UnicodeDecodeError):
        return False
    return head[0].startswith("#!") and "(written by `zray slurm`)" in head[1]


def write(path: Path, text: str, overwrite: bool = False, inputs: tuple = ()) -> None:
    """Write the script whole or not at all; executable. An existing file is replaced only
    with ``overwrite`` and only when ``zray slurm`` wrote it; never one of ``inputs``.

    It goes to a temporary name in the same folder first and is renamed into
    place, so neither sbatch nor a reader ever sees half of it, and a failure
    leaves no temporary file behind.
    """
    import tempfile

    from zray.atomic import check_output

    path = Path(path)
    check_output(path, kind="batch script", overwrite=overwrite, inputs=inputs, ours=written_by_slurm)
    if not path.parent.is_dir():
        raise ZrayError(f"--out {path}: the folder {path.parent} does not exist; expected an existing folder")
    check_syntax(text)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
