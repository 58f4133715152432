"""Starting or joining Ray the same way from every command."""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter in every process Ray starts.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"}
# Ray Train propagates these from the driver to its workers: plain prints,
# and no per-report log lines.
TRAIN_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING": "0",
}


def init_ray(address: str | None = None, *, dashboard_host: str = "127.0.0.1") -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray.

    A local Ray keeps its dashboard on (without it a finished trial's worker
    reservation was seen never to be released, docs/architecture.md section 2), bound to
    127.0.0.1 unless asked otherwise. A Ray already initialised in this process
    (a test session, a notebook) is used as it is.
    """
    import ray

    for key, value in {**WORKER_ENV, **TRAIN_ENV}.items():
        os.environ.setdefault(key, value)
    quiet_logs()
    if ray.is_initialized():  # the caller's Ray (a notebook, a test session): leave its setup alone
        return
    import logging

    from zray.console import is_verbose, quiet_worker_output

    level = logging.INFO if is_verbose() else logging.WARNING
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": WORKER_ENV}, log_to_driver=True,
                 logging_level=level)
    else:
        ray.init(
            address="local",  # never join some other `ray start` cluster on this machine by accident
            include_dashboard=True,
            dashboard_host=dashboard_host,
            runtime_env={"env_vars": WORKER_ENV},
            log_to_driver=True,
            logging_level=level,
        )
    pin_address()
    quiet_worker_output()


def pin_address() -> None:
    """Make the processes Ray Train starts from here find this Ray, not another one.

    Ray Train removes a finished run's worker reservation (placement group)
    from a helper actor that looks its cluster up by ``RAY_ADDRESS``, or,
    without it, by scanning the machine; with two Rays on one machine (a
    search and a `zray predict`, a notebook, a test session) the scan fails,
    the reservation is never released and the next trial waits for CPUs
    forever. Call in every process that starts a Ray Train run (the `zray
    train` driver, each Tune trial), once connected.
    """
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    try:  # Ray Train passes the variables it lists on to its controller and helpers
        from ray.train.v2._internal import constants

        constants.ENV_VARS_TO_PROPAGATE.add("RAY_ADDRESS")
    except (ImportError, AttributeError):
        pass


def quiet_logs() -> None:
    """Keep the terminal to zray's own progress lines.

    Ray Data's progress bars and Ray Train's per-report INFO lines repeat for
    every epoch and worker; TensorFlow logs every collective it sets up.
    Called in the driver and in every training worker.
    """
    import logging

    from zray.console import is_verbose

    names = ["ray.data", "ray.train", "ray.tune", "tensorflow", "absl"]
    # Some of Ray Train's loggers are named by file path, not module.
    names += [n for n in logging.root.manager.loggerDict if "ray/train" in n or n.startswith("ray.data")]
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    if not is_verbose():
        # Said on every start and not actionable on a laptop; README explains tokens for clusters.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # "Progress bars disabled": zray disabled them, on purpose.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        # Tune's new output engine prints its start block and a TensorBoard hint into
        # Ray's temporary folder even when silent; the legacy one at verbosity 0 does not.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        try:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created ..."
        except ImportError:
            pass
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except (ImportError, AttributeError):
        pass
