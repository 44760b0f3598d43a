"""MLflow tracking that never stops a job.

One run per training or evaluation job. Every call is retried with exponential backoff (a locked
SQLite store, a flaky server); when the retries are spent the tracker warns once and turns itself
off for the rest of the job. The JSON files a job writes never depend on it. Only rank 0 tracks
(pass ``enabled=False`` elsewhere). mlflow is imported lazily, on ``start``.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import warnings
from typing import Any, Callable, Mapping

from .utils.logger import get_logger

DEFAULT_URI = "sqlite:///results/mlflow.db"
DEFAULT_EXPERIMENT = "masqclip"
INVOCATION_ENV = "MASQCLIP_INVOCATION"
ARTIFACTS_DIRNAME = "mlartifacts"
# Stage tag of each meta-architecture (overridable with --tag stage=...).
STAGE_OF_ARCH = {"MaskFormer": "teacher", "MaskDistill": "student", "MasQTuning": "masq_tuning"}
GIT_TIMEOUT_S = 5
_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


def flatten_metrics(results: Mapping, prefix: str = "", sep: str = "/") -> dict[str, float]:
    """``{"segm": {"AP": 1.0}}`` -> ``{"segm/AP": 1.0}``; non-numeric leaves are dropped."""
    flat: dict[str, float] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name + sep, sep))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def metric_name(name: str) -> str:
    """``name`` with every character MLflow refuses in metric names replaced: ``AR@10`` -> ``AR_10``."""
    return _METRIC_UNSAFE.sub("_", name)


def git_commit(path: str | None = None) -> str:
    """HEAD of the repository holding ``path`` (default: this package), or "" when unknown."""
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                             timeout=GIT_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def default_tags(cfg, *, job: str, dataset: str = "", extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags of a job: setting, stage, round, dataset, invocation, git_commit, hostname, job, and
    ``data.<dataset>`` (the dataset's preparation manifest, :func:`data_tags`) (+ ``extra``).

    ``stage`` defaults from ``MODEL.META_ARCHITECTURE``; ``setting`` and ``round`` come from
    ``extra`` (the workflow passes them with ``--tag``); ``invocation`` from $MASQCLIP_INVOCATION.
    """
    tags = {"job": job, "stage": STAGE_OF_ARCH.get(cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.META_ARCHITECTURE),
            "setting": "", "round": "", "dataset": dataset or ",".join(cfg.DATASETS.TRAIN),
            "invocation": os.environ.get(INVOCATION_ENV, ""), "git_commit": git_commit(),
            "hostname": socket.gethostname(), "config_version": str(cfg.VERSION)}
    tags.update(data_tags(dataset.split(",") if dataset else list(cfg.DATASETS.TRAIN)))
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def data_tags(datasets: list[str]) -> dict[str, str]:
    """``{"data.<dataset>": "<preparation> sha256:<manifest hash>"}`` for each dataset whose
    preparation manifest is under the datasets root, so a run names the exact data it used."""
    try:
        from .data.manifest import manifests_for

        found = manifests_for([d for d in datasets if d])
    except (OSError, ValueError):
        return {}
    return {f"data.{name}": f"{m['preparation']} sha256:{m['manifest_sha256'][:16]}"
            for name, m in sorted(found.items())}


def parse_tags(items: list[str] | None) -> dict[str, str]:
    """``["setting=base_novel", "round=1"]`` -> dict; raises ValueError on an item without ``=``."""
    tags = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag expects KEY=VALUE, got {item!r}")
        tags[key] = value
    return tags


RUN_ID_FILE = "mlflow_run_id"  # in a job's output folder: the run a resumed job continues


def read_run_id(path: str) -> str | None:
    """The run id stored in ``path`` (None when there is none)."""
    try:
        with open(path, encoding="utf-8") as fh:
            run_id = fh.read().strip()
    except OSError:
        return None
    return run_id if re.fullmatch(r"[0-9a-zA-Z_-]{1,64}", run_id) else None


def write_run_id(path: str, run_id: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(run_id + "\n")
    os.replace(tmp, path)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Tracker:
    """One MLflow run; every method is a no-op once disabled.

    Args:
        enabled: False on ranks other than 0, or when ``TRACKING.ENABLED`` is off.
        uri: tracking URI; "" = $MLFLOW_TRACKING_URI, else ``sqlite:///results/mlflow.db``.
        experiment: "" = $MLFLOW_EXPERIMENT_NAME, else "masqclip".
        retries: attempts per call; backoff_seconds: the first wait, doubled each time.
        http_timeout, http_retries: defaults for MLflow's own HTTP settings when unset in the environment.
    """

    def __init__(self, *, enabled: bool = True, uri: str = "", experiment: str = "", retries: int = 3,
                 backoff_seconds: float = 0.5, http_timeout: float = 10, http_retries: int = 1):
        self.enabled = enabled
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "") or DEFAULT_URI
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", "") or DEFAULT_EXPERIMENT
        self.retries, self.backoff_seconds = max(int(retries), 1), float(backoff_seconds)
        self.http_timeout, self.http_retries = http_timeout, http_retries
        self.run_id: str | None = None
        self._client = None
        self.logger = get_logger("tracking")

    @classmethod
    def from_config(cls, cfg, *, enabled: bool = True, experiment: str = "") -> "Tracker":
        t = cfg.TRACKING
        return cls(enabled=enabled and t.ENABLED, uri=t.URI, experiment=experiment or t.EXPERIMENT,
                   retries=t.RETRIES, backoff_seconds=t.BACKOFF_SECONDS, http_timeout=t.HTTP_TIMEOUT,
                   http_retries=t.HTTP_RETRIES)

    @property
    def active(self) -> bool:
        return self.enabled and self.run_id is not None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` with retries; on final failure warn once and disable tracking. Returns None then."""
        if not self.enabled:
            return None
        for attempt in range(self.retries):
            try:
                return fn()
            except Exception as err:  # noqa: BLE001 - tracking must never stop a job
                if attempt + 1 < self.retries:
                    time.sleep(self.backoff_seconds * 2 ** attempt)
                    continue
                self.enabled = False
                message = (f"MLflow tracking disabled for this job: {what} failed {self.retries} times "
                           f"at {self.uri} ({type(err).__name__}: {str(err)[:300]}); metrics JSON files are still written")
                warnings.warn(message, RuntimeWarning, stacklevel=3)
                self.logger.warning(message)
        return None

    def _artifact_location(self) -> str | None:
        """For a SQLite store, artifacts go beside the database file (else the server decides)."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db_dir = os.path.dirname(os.path.abspath(self.uri[len("sqlite:///"):]))
        return "file://" + os.path.join(db_dir, ARTIFACTS_DIRNAME)

    def _connect(self, run_name: str, tags: Mapping[str, str]) -> str:
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(os.path.abspath(self.uri[len("sqlite:///"):])), exist_ok=True)
        client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:
            try:
                exp_id = client.create_experiment(self.experiment, artifact_location=self._artifact_location())
            except Exception:  # another job created it meanwhile
                exp = client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        run = client.create_run(exp_id, tags=dict(tags), run_name=run_name)
        self._client = client
        return run.info.run_id

    def _reopen(self, run_id: str) -> str | None:
        """Mark the existing run ``run_id`` RUNNING again (None when the store does not have it)."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        try:
            run = client.get_run(run_id)
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(err, "error_code", "")) or "not found" in str(err).lower():
                return None
            raise
        exp = client.get_experiment(run.info.experiment_id)
        if exp is None or exp.name != self.experiment or run.info.lifecycle_stage != "active":
            return None
        client.update_run(run_id, status="RUNNING")
        self._client = client
        return run_id

    def start(self, *, run_name: str, tags: Mapping[str, str] | None = None,
              params: Mapping[str, Any] | None = None, continue_run: str | None = None) -> "Tracker":
        """Create the run (with tags) and log ``params``; returns self.

        ``continue_run``: the id of an earlier run of this job (a resumed job); when the store has
        it, it is marked RUNNING again and continued (its params were logged by the first start).
        """
        if not self.enabled:
            return self
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(self.http_timeout)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(int(self.http_retries)))
        if continue_run:
            self.run_id = self._call("reopening the run", lambda: self._reopen(continue_run))
            if self.run_id:
                self.logger.info("continuing MLflow run %s", self.run_id)
                if tags:
                    self.set_tags(tags)
                return self
            if not self.enabled:
                return self
        self.run_id = self._call("creating the run", lambda: self._connect(run_name, tags or {}))
        if params:
            self.log_params(params)
        return self

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters, values cut to MLflow's length limit, in batches of its maximum size."""
        if not self.active:
            return
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        items = [Param(str(k), str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self._call("logging params", lambda c=chunk: self._client.log_batch(self.run_id, params=c))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log ``{name: value}`` at ``step``; names are made MLflow-safe (``metric_name``)."""
        if not self.active or not metrics:
            return
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        items = [Metric(metric_name(str(k)), float(v), now, int(step)) for k, v in metrics.items()]
        for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
            self._call("logging metrics", lambda c=chunk: self._client.log_batch(self.run_id, metrics=c))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        self._call("setting tags", lambda: self._client.log_batch(self.run_id, tags=items))

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Upload a file if it exists."""
        if self.active and os.path.isfile(path):
            self._call(f"uploading {path}", lambda: self._client.log_artifact(self.run_id, path, artifact_path))

    def end(self, status: str = "FINISHED") -> None:
        """Close the run (FINISHED | FAILED | KILLED)."""
        if self.active:
            self._call("ending the run", lambda: self._client.set_terminated(self.run_id, status))
        self.run_id = None
