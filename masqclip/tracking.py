"""MLflow tracking that never stops a job.

One run per training or evaluation job. A call to a SQLite store is retried with exponential
backoff (longer while the database is locked by other jobs); a call to a server is not (MLflow's
HTTP layer retried it already, with the short timeouts set here). When a call finally fails, or
failing calls have cost ``FAILURE_BUDGET_S`` in all, the tracker warns once and turns itself off for
the rest of the job: an unresponsive server costs a job about 10 s. The JSON files a job writes
never depend on tracking, and ``replay_metrics`` sends them to MLflow afterwards. A SQLite store is
created (and migrated) under a file lock, once, before any run starts (``init_store``; the workflow
calls it before its first job). Only rank 0 tracks (pass ``enabled=False`` elsewhere). mlflow is
imported lazily, on ``start``.
"""
from __future__ import annotations

import contextlib
import json
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
# Stage tag of each meta-architecture (overridable with --tag stage=...); the names the workflow's
# plan, folders and resources use (masqclip.manifest.STAGES).
STAGE_OF_ARCH = {"MaskFormer": "teacher", "MaskDistill": "student", "MasQTuning": "tuning"}
GIT_TIMEOUT_S = 5
FAILURE_BUDGET_S = 10.0  # seconds of failing calls after which a job stops tracking
LOCKED_ATTEMPTS = 10  # attempts of a call that found the SQLite database locked
MAX_BACKOFF_S = 2.0
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
    """Tags of a job: setting, stage, round, seed, dataset, invocation, git_commit, hostname, job, and
    ``data.<dataset>`` (the dataset's preparation manifest, :func:`data_tags`) (+ ``extra``).

    ``stage`` defaults from ``MODEL.META_ARCHITECTURE``; ``seed`` from ``SEED`` for training jobs;
    ``setting`` and ``round`` come from ``extra`` (the workflow passes them, and every job's seed,
    with ``--tag``); ``invocation`` from $MASQCLIP_INVOCATION.
    """
    tags = {"job": job, "stage": STAGE_OF_ARCH.get(cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.META_ARCHITECTURE),
            "setting": "", "round": "", "seed": str(cfg.SEED) if job == "train" else "",
            "dataset": dataset or ",".join(cfg.DATASETS.TRAIN),
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


def sqlite_path(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    return os.path.abspath(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _is_locked(err: BaseException) -> bool:
    return "database is locked" in str(err) or "database table is locked" in str(err)


@contextlib.contextmanager
def _store_lock(db: str):
    """An exclusive lock beside the database file (serialises creating and migrating it)."""
    import fcntl

    os.makedirs(os.path.dirname(db), exist_ok=True)
    with open(f"{db}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def init_store(uri: str, experiment: str = "") -> str:
    """Create (or migrate) a SQLite tracking store and the experiment, once, under a file lock.

    Concurrent first connections to a new SQLite store otherwise race in MLflow's schema migration
    and can leave it half-migrated. Other stores (a server) are left alone.

    Returns:
        What was done, in words.
    """
    db = sqlite_path(uri)
    if db is None:
        return f"{uri}: not a SQLite store, nothing to create"
    # The store's modules take seconds to import: load them before taking the lock, so jobs that
    # start together hold it only for the database work, not queued behind each other's imports.
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    from mlflow.tracking import MlflowClient

    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", "") or DEFAULT_EXPERIMENT
    with _store_lock(db):
        existed = os.path.isfile(db) and os.path.getsize(db) > 0
        client = MlflowClient(tracking_uri=uri)  # creates and migrates the schema
        if client.get_experiment_by_name(experiment) is None:
            artifacts = "file://" + os.path.join(os.path.dirname(db), ARTIFACTS_DIRNAME)
            client.create_experiment(experiment, artifact_location=artifacts)
    return f"{uri}: {'up to date' if existed else 'created'}, experiment {experiment!r}"


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
                 backoff_seconds: float = 0.5, http_timeout: float = 4, http_retries: int = 1):
        self.enabled = enabled
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "") or DEFAULT_URI
        self.experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", "") or DEFAULT_EXPERIMENT
        self.retries, self.backoff_seconds = max(int(retries), 1), float(backoff_seconds)
        self.http_timeout, self.http_retries = http_timeout, http_retries
        self.run_id: str | None = None
        self.failed_seconds = 0.0  # time spent in failing calls and their back-off
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
        """``fn()`` with retries; on final failure warn once and disable tracking. Returns None then.

        A SQLite store gets ``retries`` attempts (``LOCKED_ATTEMPTS`` while it reports being locked);
        a server one (its HTTP layer has retried). Failing calls may cost ``FAILURE_BUDGET_S`` in all.
        """
        if not self.enabled:
            return None
        attempt = 0
        while True:
            start = time.monotonic()
            try:
                return fn()
            except Exception as err:  # noqa: BLE001 - tracking must never stop a job
                attempt += 1
                self.failed_seconds += time.monotonic() - start
                limit = (max(self.retries, LOCKED_ATTEMPTS) if _is_locked(err) else self.retries) \
                    if sqlite_path(self.uri) else 1
                wait = min(self.backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_S)
                if attempt < limit and self.failed_seconds + wait < FAILURE_BUDGET_S:
                    time.sleep(wait)
                    self.failed_seconds += wait
                    continue
                self.enabled = False
                message = (f"MLflow tracking disabled for this job: {what} failed {attempt} time(s) "
                           f"at {self.uri} ({type(err).__name__}: {str(err)[:300]}); metrics JSON files are "
                           "still written ('masqclip track replay' sends them later)")
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

        if sqlite_path(self.uri) is not None:  # no job opens a store another one is still creating
            init_store(self.uri, self.experiment)
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
        mark_model_training(client, exp_id)
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
        tags = {**nesting_tags(), **{k: v for k, v in (tags or {}).items() if str(v) != ""}}  # no empty tags
        if continue_run:
            self.run_id = self._call("reopening the run", lambda: self._reopen(continue_run))
            if self.run_id:
                self.logger.info("continuing MLflow run %s", self.run_id)
                if tags:
                    self.set_tags(tags)
                return self
            if not self.enabled:
                return self
        self.run_id = self._call("creating the run", lambda: self._connect(run_name, tags))
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

    def log_datasets(self, names: list[str], context: str) -> None:
        """Log each prepared dataset as an MLflow dataset input (name, manifest digest, manifest path
        as source) with context ``training`` or ``evaluation``; unprepared names are left out."""
        if not self.active:
            return
        try:
            from .data.manifest import manifests_for

            found = manifests_for([n for n in names if n])
        except (OSError, ValueError):
            return
        if not found:
            return
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [DatasetInput(Dataset(name=name, digest=m["manifest_sha256"][:16], source_type="local",
                                       source=json.dumps({"uri": m["path"]}),
                                       profile=json.dumps({"preparation": m["preparation"]})),
                               tags=[InputTag("mlflow.data.context", context)])
                  for name, m in sorted(found.items())]
        self._call("logging datasets", lambda: self._client.log_inputs(self.run_id, datasets=inputs))

    def log_image(self, path: str, key: str, step: int = 0) -> None:
        """Log a PNG as an MLflow image under ``key`` (shown in the run's image view), if it exists."""
        if not (self.active and os.path.isfile(path)):
            return
        from PIL import Image

        def send():
            with Image.open(path) as image:
                self._client.log_image(self.run_id, image.convert("RGB"), key=key, step=step)

        self._call(f"logging image {path}", send)

    def end(self, status: str = "FINISHED") -> None:
        """Close the run (FINISHED | FAILED | KILLED)."""
        if self.active:
            self._call("ending the run", lambda: self._client.set_terminated(self.run_id, status))
        self.run_id = None


def read_metric_rows(path: str) -> list[tuple[int, dict[str, float]]]:
    """``(step, {name: value})`` pairs of a job's metrics file, as the job logged them to MLflow.

    Accepts the JSON-lines rows of a training job (``metrics.jsonl`` / ``metrics_log.jsonl``, step =
    ``iteration``), its ``train_metrics.json`` (the final metrics at step ``iterations``) and the
    JSON of ``masqclip eval`` (``results``, flattened, at step 0).

    Raises:
        ValueError: naming the file, when it is none of these.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    stripped = text.strip()
    if not stripped:
        return []
    try:
        data = json.loads(stripped)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("results"), dict):
        return [(0, flatten_metrics(data["results"]))]
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        final = flatten_metrics({k: v for k, v in data["metrics"].items() if k != "iteration"})
        return [(int(data["metrics"].get("iterations", 0)), final)]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if number == len(text.splitlines()):  # a torn last line of a killed job
                break
            raise ValueError(f"{path}:{number}: not a JSON row") from None
        if not isinstance(row, dict) or "iteration" not in row:
            raise ValueError(f"{path}:{number}: expected a metrics row with an 'iteration'")
        rows.append((int(row["iteration"]), flatten_metrics({k: v for k, v in row.items() if k != "iteration"})))
    return rows


def replay_metrics(paths: list[str], *, uri: str = "", experiment: str = "", run_id: str = "",
                   run_name: str = "", tags: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Send the metrics files of one job to MLflow, afterwards (a job that ran while tracking was down).

    The run is ``run_id``, else the one named by ``mlflow_run_id`` beside the first file (when the
    store has it), else a new run (``run_name``, ``tags``, ``replayed=true``). Values already in the
    run at the same step are not sent again, so replaying twice changes nothing. The run ends FINISHED.

    Returns:
        (run id, number of metric values sent).

    Raises:
        RuntimeError: when the store cannot be reached (tracking errors are not swallowed here).
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "") or DEFAULT_URI
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME", "") or DEFAULT_EXPERIMENT
    rows = [row for path in paths for row in read_metric_rows(path)]
    if sqlite_path(uri) is not None:
        init_store(uri, experiment)
    client = MlflowClient(tracking_uri=uri)
    run_id = run_id or read_run_id(os.path.join(os.path.dirname(os.path.abspath(paths[0])), RUN_ID_FILE)) or ""
    if run_id:
        try:
            client.get_run(run_id)
        except MlflowException:
            run_id = ""
    if not run_id:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        name = run_name or f"replay-{os.path.basename(os.path.dirname(os.path.abspath(paths[0])))}"
        run_id = client.create_run(exp_id, tags={**(tags or {}), "replayed": "true"}, run_name=name).info.run_id
    elif tags:
        client.log_batch(run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])
    have: dict[str, set[int]] = {}
    now = int(time.time() * 1000)
    items = []
    for step, values in rows:
        for key, value in values.items():
            key = metric_name(key)
            if key not in have:
                have[key] = {m.step for m in client.get_metric_history(run_id, key)}
            if step not in have[key]:
                have[key].add(step)
                items.append(Metric(key, float(value), now, step))
    for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)
    client.set_terminated(run_id, "FINISHED")
    return run_id, len(items)


# ------------------------------------------------------------------- one pipeline run, nested jobs
# A `snakemake` invocation is one parent run (created by the workflow before jobs start, its id in
# $MASQCLIP_PARENT_RUN_ID); every job's run is its child, named by what it is and tagged with the
# keys a comparison groups by. The experiment is marked as MLflow's model-training kind so its UI
# opens on the runs view.
PARENT_RUN_ENV = "MASQCLIP_PARENT_RUN_ID"
PARENT_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
RUN_KEY_TAGS = ("setting", "stage", "round", "seed", "test", "variant")
PIPELINE_JOB = "pipeline"


def nesting_tags() -> dict[str, str]:
    """``{"mlflow.parentRunId": id}`` inside a pipeline invocation (the workflow sets the variable)."""
    parent = os.environ.get(PARENT_RUN_ENV, "")
    return {PARENT_TAG: parent} if parent else {}


def mark_model_training(client, experiment_id: str) -> None:
    """Tag the experiment as MLflow's model-training kind (unless someone chose another kind)."""
    exp = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def run_name(tags: Mapping[str, str]) -> str:
    """A job's run name from its tags: ``base-novel / student r1 / seed 0`` (training),
    ``eval base-novel / masqclip r2 / generalized / seed 0`` (evaluation); parts without a tag are left out."""
    get = lambda k: str(tags.get(k, "") or "")  # noqa: E731
    rnd = f" r{get('round')}" if get("round") else ""
    if get("job") == "eval":
        what = get("variant") or get("stage")
        if rnd and not what.endswith("-" + rnd.strip()):  # a variant like proposals-r1 names its round itself
            what += rnd
        parts = [p for p in (get("setting"), what.strip(), get("test") or get("dataset"),
                             f"seed {get('seed')}" if get("seed") else "") if p]
        return "eval " + " / ".join(parts)
    parts = [p for p in (get("setting"), (get("stage") + rnd).strip(),
                         f"seed {get('seed')}" if get("seed") else "") if p]
    return " / ".join(parts) or get("job") or "run"


def non_default_params(cfg) -> dict[str, Any]:
    """The config keys whose values differ from the defaults (the full config goes as an artifact)."""
    from .config import get_cfg

    defaults = get_cfg().flatten()
    return {k: v for k, v in cfg.flatten().items() if k not in defaults or defaults[k] != v}


def _client_and_experiment(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    tracker = Tracker(uri=uri, experiment=experiment)
    if sqlite_path(tracker.uri) is not None:  # created and migrated once, under the store's file lock
        init_store(tracker.uri, tracker.experiment)
    client = MlflowClient(tracking_uri=tracker.uri)
    exp = client.get_experiment_by_name(tracker.experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(tracker.experiment, artifact_location=tracker._artifact_location())
        except Exception:  # noqa: BLE001 - created meanwhile by another process
            exp_id = client.get_experiment_by_name(tracker.experiment).experiment_id
    else:
        exp_id = exp.experiment_id
    mark_model_training(client, exp_id)
    return client, exp_id


def start_pipeline_run(*, uri: str = "", experiment: str = "", invocation: str = "", config: Mapping | None = None,
                       name: str = "") -> str:
    """Create the parent run of one pipeline invocation (config as an artifact, git commit and
    invocation as tags); returns its id, or "" when tracking fails (warned, never raised)."""
    import json
    import tempfile

    try:
        client, exp_id = _client_and_experiment(uri, experiment)
        commit = git_commit()
        tags = {"job": PIPELINE_JOB, "invocation": invocation, "git_commit": commit,
                "hostname": socket.gethostname()}
        run = client.create_run(exp_id, tags=tags, run_name=name or f"pipeline {invocation}".strip())
        if config:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "pipeline_config.json")
                with open(path, "w", encoding="utf-8") as fh:
                    json.dump(config, fh, indent=2, sort_keys=True, default=str)
                client.log_artifact(run.info.run_id, path)
            top = {k: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v for k, v in config.items()}
            client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in top.items()][:100])
        return run.info.run_id
    except Exception as err:  # noqa: BLE001 - tracking never stops the workflow
        get_logger("tracking").warning("MLflow: the pipeline run could not be created (%s: %s); jobs track "
                                       "as flat runs", type(err).__name__, str(err)[:300])
        return ""


def _param(key: str, value: Any):
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    return Param(str(key), str(value)[:MAX_PARAM_VAL_LENGTH])


def headline_metrics(tables_dir: str) -> dict[str, float]:
    """``{"<table>/<column>": value}`` from the first row (ours) of each CSV table in ``tables_dir``."""
    import csv

    metrics: dict[str, float] = {}
    if not os.path.isdir(tables_dir):
        return metrics
    for name in sorted(os.listdir(tables_dir)):
        if not name.endswith(".csv"):
            continue
        with open(os.path.join(tables_dir, name), encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2:
            continue
        for column, value in zip(rows[0][1:], rows[1][1:]):
            if value:
                metrics[metric_name(f"{name[:-4]}/{column}")] = float(value)
    return metrics


def finish_pipeline_run(run_id: str, *, uri: str = "", results: str = "", status: str = "FINISHED") -> None:
    """Log the tables and plots under ``results`` as artifacts and the tables' first rows as
    metrics of the parent run, then end it (never raises)."""
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=Tracker(uri=uri).uri)
        if results:
            metrics = headline_metrics(os.path.join(results, "tables"))
            if metrics:
                client.log_batch(run_id, metrics=[_metric(k, v) for k, v in metrics.items()])
            for folder in ("tables", "plots"):
                path = os.path.join(results, folder)
                if os.path.isdir(path):
                    client.log_artifacts(run_id, path, folder)
            _log_plots_as_images(client, run_id, os.path.join(results, "plots"))
        client.set_terminated(run_id, status)
    except Exception as err:  # noqa: BLE001 - tracking never stops the workflow
        get_logger("tracking").warning("MLflow: the pipeline run %s could not be finished (%s: %s)", run_id,
                                       type(err).__name__, str(err)[:300])


def _metric(key: str, value: float, step: int = 0):
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), step)


def _log_plots_as_images(client, run_id: str, plots_dir: str) -> None:
    """Every PNG under ``plots_dir`` (plots, qualitative figures) as an MLflow image keyed by its path."""
    from PIL import Image

    if not os.path.isdir(plots_dir):
        return
    for folder, _, files in sorted(os.walk(plots_dir)):
        for name in sorted(f for f in files if f.endswith(".png")):
            path = os.path.join(folder, name)
            key = os.path.splitext(os.path.relpath(path, plots_dir))[0].replace(os.sep, "/")
            try:
                with Image.open(path) as image:
                    client.log_image(run_id, image.convert("RGB"), key=metric_name(key))
            except OSError:
                continue
