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

    >>> from zray import config, slurm
    >>> space = config.load("search_spaces/inception.yaml")          # doctest: +SKIP
    >>> print(slurm.batch_script(space, "search_spaces/inception.yaml", nodes=4,
    ...                          shared="/scratch/zray", venv="~/zray-venv"))   # doctest: +SKIP
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

__all__ = ["batch_script", "node_resources"]


def node_resources(space) -> tuple[int, int]:
    """(CPUs, GPUs) a node needs to host the search's concurrent trials plus Ray Data."""
    r = space.resources
    trials = space.tune.max_concurrent
    cpus = math.ceil(trials * (r.num_workers * r.cpus_per_worker + r.trial_cpus)) + 1
    gpus = math.ceil(trials * r.num_workers * r.gpus_per_worker)
    return cpus, gpus


def batch_script(space, space_file: str, *, nodes: int = 1, shared: str, venv: str, workdir: str,
                 time_limit: str = "24:00:00", partition: str | None = None, port: int = 6379,
                 dashboard_port: int = 8265, ray_args: str = "", overrides: tuple[str, ...] = (),
                 cpus: int | None = None, gpus: int | None = None) -> str:
    """The text of the batch script (see the module docstring)."""
    need_cpus, need_gpus = node_resources(space)
    cpus, gpus = cpus or need_cpus, need_gpus if gpus is None else gpus
    q = shlex.quote
    sets = " ".join(f"--set {q(o)}" for o in overrides)
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
        f"#SBATCH --output={shared}/zray-{space.name}-%j.out",
        "set -euo pipefail",
        "",
        f"SHARED={q(shared)}        # a folder every node sees: the token and the results",
        f"VENV={venv}               # the virtual environment zray is installed in, on every node",
        f"PORT={port}",
        f"DASHBOARD_PORT={dashboard_port}",
        f"RAY_ARGS={q(ray_args)}    # extra `ray start` flags (ports, object store size)",
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
        '--num-cpus="$SLURM_CPUS_PER_TASK" --temp-dir="$TMP/head" --disable-usage-stats $RAY_ARGS &',
        'for i in $(seq 120); do "$VENV/bin/ray" status --address "$RAY_ADDRESS" >/dev/null 2>&1 && break; '
        "sleep 1; done",
        "for ((i = 1; i < SLURM_JOB_NUM_NODES; i++)); do",
        '  srun --nodes=1 --ntasks=1 -w "${nodes[$i]}" "$VENV/bin/ray" start --block --address="$RAY_ADDRESS" '
        '--num-cpus="$SLURM_CPUS_PER_TASK" --temp-dir="$TMP/worker$i" --disable-usage-stats $RAY_ARGS &',
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


def write(path: Path, text: str, overwrite: bool = False) -> None:
    """Write the script, refusing to replace a file unless asked; executable."""
    from zray.errors import ZrayError

    path = Path(path)
    if path.exists() and not overwrite:
        raise ZrayError(f"{path}: already exists; pass --overwrite to replace it")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)
