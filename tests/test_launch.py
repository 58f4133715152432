"""Clusters launched for real on this machine: `ray up` of cluster-onprem.yaml over SSH, and SLURM.

Both need system packages (CI installs them with apt, as it installs
Chromium): openssh-server and rsync for the on-premises cluster, slurm-wlm
and munge for SLURM. Without them a local run skips, naming what is missing;
under CI (CI=true) the test fails instead.

On one machine, the "nodes" are loopback addresses (127.0.0.3 the head,
127.0.0.2 the worker) reached through a private sshd on a free port, each
Ray node with its own ports and temporary folder. Nothing here runs the
machine-wide `ray stop`: the test session's own Ray must survive.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from test_cluster import WAIT_FOR_NODES, _free_ports, _node_env, _processes_naming, _two_node_space, ray_checked

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")

pytestmark = [pytest.mark.slow, pytest.mark.launch]

# Kills the processes of one Ray cluster on this machine: those whose command
# line names one of the patterns (the nodes' temporary folders, the GCS port),
# and their children. What `ray stop` would do on a machine of its own.
STOPPER = textwrap.dedent('''
    import os, signal, sys, time
    patterns = sys.argv[1:]

    def table():
        procs = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace")
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            procs[int(entry)] = (cmd, ppid)
        return procs

    def targets():
        procs = table()
        chosen = {p for p, (cmd, _) in procs.items() if p != os.getpid() and any(s in cmd for s in patterns)}
        grew = True
        while grew:
            more = {p for p, (_, ppid) in procs.items() if ppid in chosen} - chosen
            chosen |= more
            grew = bool(more)
        return chosen

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        for pid in targets():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while targets() and time.time() < deadline:
            time.sleep(0.5)
    left = targets()
    print(f"stopped; {len(left)} process(es) left")
    sys.exit(1 if left else 0)
''')


def _require(programs: dict[str, str]) -> None:
    """Skip (fail under CI) unless every program is installed; ``programs``: path or name -> package."""
    missing = sorted({pkg for prog, pkg in programs.items() if not (shutil.which(prog) or Path(prog).exists())})
    if missing:
        reason = f"needs the Debian packages {', '.join(missing)} (apt-get install -y {' '.join(missing)})"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _short_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))  # short: Ray's socket paths have a length limit


# --- the on-premises cluster over SSH ----------------------------------------------


@pytest.fixture(scope="module")
def sshd():
    """A private sshd on 127.0.0.2/.3 and a free port, key login for root.

    Its sessions run a wrapper (ForceCommand) that stands in for a node's own
    login environment: `ray` is the venv's, and `ray stop` (what `ray down`
    runs on the head) stops this test's cluster only.
    """
    _require({"/usr/sbin/sshd": "openssh-server", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
              "rsync": "rsync"})
    base = _short_dir("zs")
    port = _free_ports(1)[0]
    for name in ("host_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True)
    shutil.copy(base / "id_ed25519.pub", base / "authorized_keys")
    (base / "stop.py").write_text(STOPPER)
    patterns = base / "patterns"  # what `ray stop` stops: written by the test once it knows
    patterns.write_text("")
    session = base / "session.sh"
    session.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        ray() {{
          if [ "${{1-}}" = stop ]; then
            xargs -a {patterns} {sys.executable} {base / 'stop.py'}
          else
            {RAY} "$@"
          fi
        }}
        export -f ray
        exec /bin/bash -c "${{SSH_ORIGINAL_COMMAND:-exec /bin/bash -l}}"
        """))
    session.chmod(0o755)
    # `ray up` and the head's autoscaler reach the nodes with `ssh` from PATH: this one knows the port.
    bin_dir = base / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f'#!/bin/sh\nexec /usr/bin/ssh -p {port} "$@"\n')
    (bin_dir / "ssh").chmod(0o755)
    config = base / "sshd_config"
    config.write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.2
        ListenAddress 127.0.0.3
        HostKey {base / 'host_key'}
        PidFile {base / 'sshd.pid'}
        AuthorizedKeysFile {base / 'authorized_keys'}
        StrictModes no
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        ForceCommand {session}
        """))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    log = (base / "sshd.log").open("w")
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(50):
            probe = subprocess.run([str(bin_dir / "ssh"), "-i", str(base / "id_ed25519"), "-o", "BatchMode=yes",
                                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                    "root@127.0.0.3", "true"], capture_output=True, timeout=20)
            if probe.returncode == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the test's sshd did not accept the key: {probe.stderr.decode()[-500:]}")
        yield {"port": port, "key": str(base / "id_ed25519"), "bin": str(bin_dir), "base": base,
               "patterns": patterns, "stop": str(base / "stop.py")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _substitute(command: str, changes: dict[str, str]) -> str:
    for old, new in changes.items():
        assert old in command, f"cluster-onprem.yaml changed: {old!r} not in {command!r}"
        command = command.replace(old, new)
    return command


def _port_flags(names: list[str]) -> str:
    return " ".join(f"--{name}={port}" for name, port in zip(names, _free_ports(len(names))))


def _onprem_file(sshd: dict, work: Path, gcs_port: int, temp_dirs: dict[str, str]) -> Path:
    """cluster-onprem.yaml, filled in for two nodes on this machine."""
    config = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    config["cluster_name"] = f"zray-test-{gcs_port}"
    config["provider"].update(head_ip="127.0.0.3", worker_ips=["127.0.0.2"])
    config["auth"] = {"ssh_user": "root", "ssh_private_key": sshd["key"]}
    config["min_workers"] = config["max_workers"] = 1
    # The repository goes to a folder of this test (not ~/zray); the token file is
    # this machine's own, already in place. The venv exists: no install.
    assert config["file_mounts"]["~/zray"] == "."
    config["file_mounts"] = {str(work / "zray"): "."}
    assert any("pip install" in c for c in config["setup_commands"])
    config["setup_commands"] = []
    node = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port"]
    # Both nodes share this machine: each gets its own IP, ports and folder. The
    # head's autoscaler keeps its state apart from the launcher's (RAY_TMPDIR).
    head = _substitute(config["head_start_ray_commands"][0], {
        "export ": f"export PATH={sshd['bin']}:$PATH RAY_TMPDIR={temp_dirs['state']} ",
        "~/zray-venv/bin/ray": RAY,
        "--port=6379": f"--port={gcs_port} --node-ip-address=127.0.0.3 --num-cpus=2 "
                       + _port_flags([*node, "dashboard-port", "ray-client-server-port"]),
        "--temp-dir=/tmp/zray-ray": f"--temp-dir={temp_dirs['head']}",
    })
    worker = _substitute(config["worker_start_ray_commands"][0], {
        "~/zray-venv/bin/ray": RAY,
        "$RAY_HEAD_IP:6379": f"$RAY_HEAD_IP:{gcs_port} --node-ip-address=127.0.0.2 --num-cpus=2 "
                             + _port_flags(node),
        "--temp-dir=/tmp/zray-ray": f"--temp-dir={temp_dirs['worker']}",
    })
    config["head_start_ray_commands"] = [head]
    config["worker_start_ray_commands"] = [worker]
    path = work / "cluster-onprem.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(cmd: list[str], env: dict, timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    print(f"$ {' '.join(cmd[:3])} ...  (exit {result.returncode})\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    return result


def test_onprem_file_passes_ray_validation():
    config = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    assert ray_checked(config)["provider"]["type"] == "local"
    assert config["provider"]["type"] == "local"
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the token reaches every node
    assert all("RAY_AUTH_MODE=token" in c for c in
               config["head_start_ray_commands"] + config["worker_start_ray_commands"])


@pytest.mark.timeout(900)
def test_ray_up_runs_a_search_on_both_nodes_and_ray_down_leaves_nothing(sshd, sim_data, tmp_path):
    work = _short_dir("zu")
    temp_dirs = {k: str(work / k[0]) for k in ("head", "worker", "state")}
    gcs_port = _free_ports(1)[0]
    address = f"127.0.0.3:{gcs_port}"
    cluster_procs = [temp_dirs["head"], temp_dirs["worker"], f":{gcs_port}"]
    sshd["patterns"].write_text("\n".join(cluster_procs) + "\n")
    path = _onprem_file(sshd, work, gcs_port, temp_dirs)
    env = {**_node_env(), "PATH": f"{sshd['bin']}:{os.environ['PATH']}", "RAY_TMPDIR": str(work / "l")}
    subprocess.run([RAY, "get-auth-token", "--generate"], capture_output=True, env=env, check=True)
    home_files = [Path.home() / name for name in ("ray_bootstrap_config.yaml", "ray_bootstrap_key.pem")]
    existed = {p: p.exists() for p in home_files}
    try:
        t0 = time.perf_counter()
        up = _run([RAY, "up", "-y", "--no-config-cache", str(path)], env, timeout=300)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        joined = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, address, "120"], capture_output=True,
                                text=True, timeout=200, env=env)
        nodes = json.loads(joined.stdout.strip().splitlines()[-1]) if joined.returncode == 0 else []
        assert len(nodes) == 2, joined.stderr[-2000:]
        print(f"ray up: both nodes up after {time.perf_counter() - t0:.0f} s")

        space = _two_node_space(work, sim_data, "onprem")
        storage = work / "shared" / "runs"
        search = _run([RAY, "exec", str(path), f"cd {ROOT} && {VENV_BIN / 'zray'} tune {space} "
                       f"--address {address} --storage {storage}"], env, timeout=500)
        assert search.returncode == 0, search.stdout[-4000:] + search.stderr[-2000:]
        assert "shared by all 2 nodes" in search.stdout and "best checkpoint:" in search.stdout
        trained_on = {}
        for result_file in (storage / "onprem").glob("trial-*/result.json"):
            rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
            trained_on[result_file.parent.name] = {r["node_id"] for r in rows if "node_id" in r}
        # Two trials at once, one 1.1-CPU worker each on 2-CPU nodes: each trained on one node, the
        # two on both nodes; the best checkpoint is whole on the shared storage.
        assert len(trained_on) == 2 and all(len(ids) == 1 for ids in trained_on.values()), trained_on
        assert set().union(*trained_on.values()) == {n["id"] for n in nodes}, trained_on
        best = json.loads((storage / "onprem" / "best.json").read_text())
        assert Path(best["checkpoint"], "state.json").exists(), best

        down = _run([RAY, "down", "-y", str(path)], env, timeout=180)
        assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
        deadline = time.time() + 30
        while _processes_naming(cluster_procs) and time.time() < deadline:
            time.sleep(1)
        assert _processes_naming(cluster_procs) == [], "processes of the cluster outlived `ray down`"
    finally:
        subprocess.run([sys.executable, sshd["stop"], *cluster_procs], capture_output=True, timeout=60)
        for p in home_files:
            if not existed[p]:
                p.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


# --- SLURM --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster():
    """munged, slurmctld and slurmd for this machine as a one-node SLURM cluster."""
    _require({"/usr/sbin/slurmctld": "slurm-wlm", "/usr/sbin/slurmd": "slurm-wlm", "sbatch": "slurm-client",
              "/usr/sbin/munged": "munge"})
    base = _short_dir("zl")
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    for sub in ("state", "spool", "shared"):
        (base / sub).mkdir()
    procs = []
    key = Path("/etc/munge/munge.key")
    if not key.exists() or key.stat().st_size == 0:
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    Path("/run/munge").mkdir(exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
        procs.append(subprocess.Popen(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "-F"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(50):
            if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
    ctld_port, d_port = _free_ports(2)
    conf = base / "slurm.conf"
    conf.write_text(textwrap.dedent(f"""\
        ClusterName=zraytest
        SlurmctldHost={host}(127.0.0.1)
        SlurmUser=root
        SlurmdUser=root
        SlurmctldPort={ctld_port}
        SlurmdPort={d_port}
        AuthType=auth/munge
        StateSaveLocation={base / 'state'}
        SlurmdSpoolDir={base / 'spool'}
        SlurmctldPidFile={base / 'slurmctld.pid'}
        SlurmdPidFile={base / 'slurmd.pid'}
        SlurmctldLogFile={base / 'slurmctld.log'}
        SlurmdLogFile={base / 'slurmd.log'}
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        JobAcctGatherType=jobacct_gather/none
        AccountingStorageType=accounting_storage/none
        JobCompType=jobcomp/none
        SelectType=select/cons_tres
        SelectTypeParameters=CR_CPU
        SchedulerType=sched/backfill
        MpiDefault=none
        ReturnToService=2
        KillWait=5
        MinJobAge=600
        NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
        PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
        """))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        for daemon in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd"):
            procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(120):
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, env=env)
            if state.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the SLURM node did not become idle: {state.stdout} {state.stderr}")
        yield {"env": env, "shared": base / "shared", "base": base}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.timeout(600)
def test_sbatch_runs_the_search_that_zray_slurm_wrote(slurm_cluster, sim_data):
    base, shared, env = slurm_cluster["base"], slurm_cluster["shared"], slurm_cluster["env"]
    space = base / "slurm-search.yaml"
    space.write_text(yaml.safe_dump({
        "name": "slurm-search", "model": "cnn", "data": {"path": str(sim_data), "image_size": 32},
        "fixed": {"epochs": 1, "batch_size": 32, "blocks": 2, "dense_units": 32, "learning_rate": 1e-3},
        "tune": {"num_samples": 1, "seed": 0},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.8, "trial_cpus": 0.1},
    }))
    script = base / "search.sbatch"
    gcs, dashboard = _free_ports(2)
    ports = _port_flags(["node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                         "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port",
                         "ray-client-server-port"])
    wrote = subprocess.run([str(VENV_BIN / "zray"), "slurm", str(space), "--out", str(script), "--shared",
                            str(shared), "--port", str(gcs), "--dashboard-port", str(dashboard),
                            "--ray-args", ports], capture_output=True, text=True, env=env, cwd=ROOT)
    assert wrote.returncode == 0, wrote.stderr
    assert "#SBATCH --cpus-per-task=2" in script.read_text()  # 0.8 + 0.1 CPU for the trial, 1 for Ray Data
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env,
                               cwd=ROOT)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 540:
        queued = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env)
        if not queued.stdout.strip():
            break
        time.sleep(2)
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env).stdout
    output = (shared / f"zray-slurm-search-{job}.out")
    text = output.read_text() if output.exists() else "(no output file)"
    print(f"sbatch job {job} ({time.perf_counter() - t0:.0f} s):\n{text[-4000:]}")
    assert re.search(r"JobState=COMPLETED", info), info + text[-3000:]
    assert "zray: cluster up:" in text and "best checkpoint:" in text, text[-3000:]
    best = json.loads((shared / "runs" / "slurm-search" / "best.json").read_text())
    assert Path(best["checkpoint"], "state.json").exists()
    assert _processes_naming([f"/tmp/zray-ray-{job}/"]) == [], "Ray processes of the job outlived it"
