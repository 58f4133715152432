"""Multi-node: the cluster file, storage helpers and checks, GPU placement, a real two-node cluster."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from zray import storage as st
from zray.train import TrainJob, make_trainer

ROOT = Path(__file__).resolve().parents[1]


# --- cluster.yaml, checked by Ray's own means ----------------------------------------


def ray_checked(config: dict) -> dict:
    """``config`` with the provider's defaults filled in by Ray's public SDK
    (``ray.autoscaler.sdk.fillout_defaults``), validated against the JSON schema
    Ray ships beside it (``ray/autoscaler/ray-schema.json``, what ``ray up``
    applies), and its head node type one of the node types it defines.

    ``setup_commands`` stay apart from ``head_setup_commands`` and
    ``worker_setup_commands`` here: ``ray up`` runs them on every node first.
    """
    import importlib.resources

    import jsonschema
    from ray.autoscaler.sdk import fillout_defaults

    schema = json.loads((importlib.resources.files("ray.autoscaler") / "ray-schema.json").read_text())
    prepared = fillout_defaults(copy.deepcopy(config))
    jsonschema.validate(prepared, schema)
    types = prepared.get("available_node_types", {})
    if types and prepared.get("head_node_type") not in types:
        raise ValueError(f"head_node_type {prepared.get('head_node_type')!r} is none of {sorted(types)}")
    return prepared


def _cluster_file() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_ray_validation():
    config = _cluster_file()
    prepared = ray_checked(config)
    assert prepared["provider"]["type"] in ("aws", "gcp")
    head = prepared["head_node_type"]
    types = prepared["available_node_types"]
    assert "GPU" not in types[head].get("resources", {})
    gpu_types = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) > 0]
    assert gpu_types and all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in gpu_types)
    # zray is installed on every node from the repository that file_mounts copies there.
    mounted = set(config["file_mounts"])
    assert any(m.rstrip("/") in cmd for m in mounted for cmd in prepared["setup_commands"])
    assert any("pip install" in cmd and "zray" in cmd for cmd in prepared["setup_commands"])
    assert "s3://" in (ROOT / "cluster.yaml").read_text()


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(max_workers="four"),  # wrong type
        lambda c: c.update(head_node_type="no-such-type"),  # names no node type
        lambda c: c["available_node_types"]["worker-gpu"].pop("node_config"),  # required field
        lambda c: c.update(setup_comands=["pip install zray"]),  # misspelt key
    ],
    ids=["wrong-type", "unknown-head-type", "missing-node-config", "unknown-key"],
)
def test_broken_cluster_yaml_fails_ray_validation(break_it):
    import jsonschema

    config = _cluster_file()
    break_it(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        ray_checked(config)


# --- storage helpers and GPU placement (no Ray started) --------------------------------


def test_storage_helpers_on_paths_and_uris(tmp_path):
    assert st.is_uri("s3://bucket/zray") and st.is_uri("gs://b/x") and not st.is_uri("runs")
    assert st.join("s3://bucket/zray/", "exp", "trials") == "s3://bucket/zray/exp/trials"
    assert st.join(tmp_path, "a") == str(tmp_path / "a")
    for base in (str(tmp_path / "local"), f"file://{tmp_path}/uri"):
        path = st.join(base, "exp", "note.txt")
        assert st.read_text(path) is None and not st.exists(path)
        st.write_text(path, "hello")
        assert st.read_text(path) == "hello" and st.exists(path)
        st.remove(path)
        assert not st.exists(path)
        st.remove(path)  # removing twice is fine


def _job(**changes) -> TrainJob:
    base = dict(model="cnn", hyperparameters={"epochs": 1}, data_path="/data", image_size=32,
                z_min=0.0, z_max=0.4, n_bins=20, manifest_hash="0" * 16)
    return TrainJob(**{**base, **changes})


def test_gpus_per_worker_reach_scaling_config(tmp_path):
    trainer = make_trainer(_job(num_workers=2, cpus_per_worker=4.0), datasets=None,
                           storage_path=tmp_path, name="gpu", gpus_per_worker=1)
    scaling = trainer.scaling_config
    assert scaling.use_gpu is True and scaling.num_workers == 2
    assert scaling.resources_per_worker == {"CPU": 4.0, "GPU": 1}
    assert trainer.train_loop_config["job"]["gpus_per_worker"] == 1.0
    cpu = make_trainer(_job(), datasets=None, storage_path=tmp_path, name="cpu")
    assert cpu.scaling_config.use_gpu is False and "GPU" not in cpu.scaling_config.resources_per_worker
    # A URI storage goes to Ray Train as it is, and nothing is made locally.
    remote = make_trainer(_job(), datasets=None, storage_path=f"file://{tmp_path}/remote", name="r")
    assert remote.run_config.storage_path == f"file://{tmp_path}/remote"
    assert remote.train_loop_config["job"]["run_dir"] == f"file://{tmp_path}/remote/r"
    assert not (tmp_path / "remote").exists()


def test_checkpoints_are_kept_by_the_search_metric(tmp_path):
    """Ray keeps the two checkpoints best by the job's metric, not always by val_sigma_mad."""
    default = make_trainer(_job(), datasets=None, storage_path=tmp_path, name="default")
    assert default.run_config.checkpoint_config.checkpoint_score_attribute == "val_sigma_mad"
    crps = make_trainer(_job(metric="val_crps", mode="min"), datasets=None, storage_path=tmp_path, name="crps")
    assert crps.run_config.checkpoint_config.checkpoint_score_attribute == "val_crps"
    assert crps.run_config.checkpoint_config.checkpoint_score_order == "min"


def test_resources_config_flows_into_the_job(tmp_path):
    from zray import config
    from zray.train import job_for

    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump({
        "name": "gpu", "model": "cnn", "data": {"path": str(tmp_path), "image_size": 32},
        "resources": {"num_workers": 2, "cpus_per_worker": 4, "gpus_per_worker": 1, "mixed_precision": True},
    }))
    space = config.load(path)
    job = job_for(space, space.default_hyperparameters(), "0" * 16)
    assert job.gpus_per_worker == 1 and job.mixed_precision is True and job.num_workers == 2
    assert (job.metric, job.mode) == ("val_sigma_mad", "min")


def test_mixed_precision_only_on_gpus_and_pdf_stays_float32():
    import tensorflow as tf

    from zray.models import ModelSpec, build_model, keras
    from zray.train.steps import set_precision

    k = keras()

    class FakeTF:  # a worker that sees one GPU
        class config:  # noqa: N801
            @staticmethod
            def list_physical_devices(kind):
                return ["/physical_device:GPU:0"] if kind == "GPU" else []

    try:
        assert set_precision(_job(mixed_precision=True), k, tf) == "float32"  # no GPU asked for
        assert set_precision(_job(mixed_precision=True, gpus_per_worker=1), k, tf) == (
            "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
        )
        assert set_precision(_job(mixed_precision=False, gpus_per_worker=1), k, FakeTF) == "float32"
        assert set_precision(_job(mixed_precision=True, gpus_per_worker=1), k, FakeTF) == "mixed_float16"
        job = _job(hyperparameters={"blocks": 2, "dense_units": 16, "filters": 8})
        model = build_model("cnn", {"blocks": 2, "dense_units": 16, "filters": 8},
                            ModelSpec(image_size=32, bins=job.bins))
        assert model.get_layer("logits").compute_dtype == "float16"
        assert model.get_layer("pdf").compute_dtype == "float32"
        # One loss-scaled step, as worker_loop takes it, on float32 inputs.
        optimizer = k.mixed_precision.LossScaleOptimizer(k.optimizers.Adam(1e-3))
        optimizer.build(model.trainable_variables)
        image = tf.random.uniform([4, 32, 32, 5])
        ebv = tf.zeros([4, 1])
        with tf.GradientTape() as tape:
            probs = model([image, ebv], training=True)
            assert probs.dtype == tf.float32
            loss = tf.reduce_mean(k.losses.sparse_categorical_crossentropy(tf.constant([0, 1, 2, 3]), probs))
            scaled = optimizer.get_scaled_loss(loss)
        grads = optimizer.get_unscaled_gradients(tape.gradient(scaled, model.trainable_variables))
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    finally:
        k.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_search_with_uri_storage(ray_session, sim_data, tmp_path):
    """Tune and Train write to a URI (file:// here, as s3:// on a cluster); the driver keeps optuna.db."""
    from zray import config, search

    path = _two_node_space(tmp_path, sim_data, "uri")
    space = config.load(path, ["tune.num_samples=1", "resources.cpus_per_worker=0.9"])
    store = tmp_path / "store"
    summary = search.run(space, runs_dir=f"file://{store}", local_runs=tmp_path / "local")
    assert summary["remote"] and summary["experiment"] == f"file://{store}/uri"
    assert (store / "uri" / search.SPACE_FILE).exists() and (store / "uri" / "tuner.pkl").exists()
    assert len(list((store / "uri" / search.TRIALS_DIR).glob("trial-*/checkpoint_*/state.json"))) == 1
    assert (tmp_path / "local" / "uri" / search.STUDY_FILE).exists()
    # What `aws s3 sync` would fetch reads like any experiment folder.
    fetched = search.summarize(store / "uri")
    assert [r["status"] for r in fetched["trials"]] == ["complete"]


# --- a real two-node Ray cluster on this machine ---------------------------------------
#
# Both nodes are `ray start` processes driven only through subprocesses, with
# their own ports and temp folders, so a Ray the test session runs in this
# process (the ray_session fixture) is neither used nor disturbed.
#
# A node-local folder, on one machine: the second node runs in its own mount
# namespace (`unshare -m`, as root) where NODE_LOCAL is covered by a private
# tmpfs. Both nodes then have a folder at that path, as two machines with
# their own disks would, but not the same folder: the driver's marker is
# invisible to the second node. Everything else (data, the shared storage) is
# the same folder for both nodes, as NFS would make it.

RAY = str(Path(sys.executable).with_name("ray"))
NODE_START_TIMEOUT_S = 90


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _can_unshare(directory: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", f'mount -t tmpfs zray-probe "{directory}"'],
        capture_output=True, timeout=20,
    )
    return probe.returncode == 0


def _node_env() -> dict:
    from zray.runtime import TRAIN_ENV, WORKER_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    # Token auth (Ray's default for a new cluster) for the nodes and every driver: the
    # token in ~/.ray is shared by all of them; joining nodes need the mode set.
    return {**env, **WORKER_ENV, **TRAIN_ENV, "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "token"}


def _ray_start(temp_dir: str, resources: dict, *, head_port: int | None = None, address: str | None = None) -> list[str]:
    names = ["node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port"]
    if head_port:
        names += ["dashboard-port", "ray-client-server-port"]
    cmd = [RAY, "start", "--block", "--num-cpus", "2", "--num-gpus", "0",
           "--resources", json.dumps(resources), "--temp-dir", temp_dir, "--disable-usage-stats"]
    cmd += [f"--{name}={port}" for name, port in zip(names, _free_ports(len(names)))]
    if head_port:
        cmd += ["--head", f"--port={head_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1"]
    else:
        cmd += [f"--address={address}"]
    return cmd


def _stop(procs: list[subprocess.Popen], temp_dirs: list[str]) -> None:
    """Stop our nodes only: their process groups, then anything naming their temp folders.

    A node's GCS server and raylet were still running 30 s after a SIGTERM, and
    nothing reads what a graceful stop would write: they get 3 s, then SIGKILL."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 3
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for _ in range(3):
        left = _processes_naming(temp_dirs)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not left:
            break
        time.sleep(1)


def _processes_naming(needles: list[str]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            pids.append(int(entry.name))
    return pids


WAIT_FOR_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.time() + float(sys.argv[2])
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2 or time.time() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in alive]))
"""


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head node and a second node joined to it; yields address, node ids and folders.
    (A search whose trials train on both nodes runs in tests/test_launch.py, on a cluster
    that `ray up` starts.)"""
    base = tmp_path_factory.mktemp("cluster")
    node_local = base / "node-local"
    node_local.mkdir()
    private = _can_unshare(node_local)
    temp_dirs = [tempfile.mkdtemp(prefix="zh"), tempfile.mkdtemp(prefix="zw")]  # short: socket paths
    port = _free_ports(1)[0]
    address = f"127.0.0.1:{port}"
    procs = []
    logs = [(base / "head.log").open("w"), (base / "node2.log").open("w")]
    try:
        head = _ray_start(temp_dirs[0], {"zray_head": 1}, head_port=port)
        procs.append(subprocess.Popen(head, stdout=logs[0], stderr=subprocess.STDOUT,
                                      env=_node_env(), start_new_session=True))
        time.sleep(4)
        second = _ray_start(temp_dirs[1], {"zray_second": 1}, address=address)
        if private:
            script = f'mount -t tmpfs zray-node-local "{node_local}" && exec "$0" "$@"'
            second = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, *second]
        procs.append(subprocess.Popen(second, stdout=logs[1], stderr=subprocess.STDOUT,
                                      env=_node_env(), start_new_session=True))
        joined = subprocess.run(
            [sys.executable, "-c", WAIT_FOR_NODES, address, str(NODE_START_TIMEOUT_S)],
            capture_output=True, text=True, timeout=NODE_START_TIMEOUT_S + 60, env=_node_env(),
        )
        nodes = json.loads(joined.stdout.strip().splitlines()[-1]) if joined.returncode == 0 else []
        if len(nodes) != 2:
            logs[0].flush(), logs[1].flush()
            pytest.fail(
                f"the two-node cluster did not come up: {joined.stderr[-1500:]}\n"
                f"head: {(base / 'head.log').read_text()[-1500:]}\nnode2: {(base / 'node2.log').read_text()[-1500:]}"
            )
        ids = {("head" if "zray_head" in n["resources"] else "second"): n["id"] for n in nodes}
        yield {"address": address, "ids": ids, "base": base, "node_local": node_local, "private": private}
    finally:
        _stop(procs, temp_dirs)
        for log in logs:
            log.close()
        for temp_dir in temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _two_node_space(tmp: Path, data_path: Path, name: str) -> Path:
    space = {
        "name": name,
        "model": "cnn",
        "data": {"path": str(data_path), "image_size": 32},
        "fixed": {"epochs": 1, "batch_size": 32, "blocks": 2, "dense_units": 32},
        "search": {"learning_rate": {"type": "float", "low": 3e-4, "high": 3e-3, "log": True}},
        "tune": {"num_samples": 2, "max_concurrent": 2, "seed": 0},
        # Each node has 2 CPUs and fits one 1.1-CPU Train worker: two trials at
        # once must train on two nodes, and each node keeps whole CPUs for Ray Data.
        "resources": {"num_workers": 1, "cpus_per_worker": 1.1, "trial_cpus": 0.1},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _zray_tune(cluster: dict, path: Path, storage: Path, timeout: float):
    return subprocess.run(
        [sys.executable, "-m", "zray", "tune", str(path), "--storage", str(storage),
         "--address", cluster["address"]],
        capture_output=True, text=True, timeout=timeout,
        env={**_node_env(), "RAY_ADDRESS": cluster["address"]},
    )


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_storage_check_refuses_a_node_local_folder(two_nodes, sim_data):
    if not two_nodes["private"]:
        pytest.skip("needs `unshare -m` (root) to give the second node a folder of its own")
    base = two_nodes["base"]
    path = _two_node_space(base, sim_data, "node-local")
    storage = two_nodes["node_local"]
    result = _zray_tune(two_nodes, path, storage, timeout=150)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    print(message)
    second = two_nodes["ids"]["second"][:8]
    assert f"storage {storage} is not shared by all 2 nodes" in message
    assert f"node {second}" in message and "is a different folder" in message
    assert f"node {two_nodes['ids']['head'][:8]}" not in message  # the head shares it with the driver
    assert "NFS" in message and "s3://" in message
    # Refused before any trial started, and the check left no marker behind.
    experiment = storage / "node-local"
    assert not list(experiment.glob("trial-*")) and not (experiment / "tuner.pkl").exists()
    assert not list(storage.glob(".zray-storage-check-*"))
