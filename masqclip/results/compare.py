"""Side-by-side comparison of one pipeline invocation's runs, from MLflow (``search_runs``).

The invocation is a parent run (``tags.job = 'pipeline'``); its children are the jobs. The
comparison lists the evaluation runs (``tags.job = 'eval'``), one row per run, sorted by setting,
test, variant, round and seed, with the chosen metrics as columns: the rounds, seeds and variants of
the invocation next to one another.
"""
from __future__ import annotations

DEFAULT_METRICS = ("segm/AP50_novel", "segm/AP50_base", "segm/AP50", "proposals/AR_100_novel",
                   "panoptic_seg/PQ", "sem_seg/mIoU")
KEYS = ("setting", "test", "variant", "round", "seed")


def find_parent(client, experiment_id: str, invocation: str = "") -> str:
    """Run id of the invocation's parent run (the newest invocation when none is named)."""
    query = "tags.job = 'pipeline'" + (f" and tags.invocation = '{invocation}'" if invocation else "")
    runs = client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time DESC"],
                              max_results=1)
    if not runs:
        raise ValueError(f"no pipeline run{' for invocation ' + invocation if invocation else ''} in the experiment")
    return runs[0].info.run_id


def comparison(*, uri: str, experiment: str, invocation: str = "", metrics=DEFAULT_METRICS, setting: str = "",
               test: str = ""):
    """``(parent run id, pandas.DataFrame)``: the invocation's evaluation runs side by side."""
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"no experiment {experiment!r} at {uri}")
    parent = find_parent(client, exp.experiment_id, invocation)
    query = f"tags.mlflow.parentRunId = '{parent}' and tags.job = 'eval'"
    if setting:
        query += f" and tags.setting = '{setting}'"
    if test:
        query += f" and tags.test = '{test}'"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs([exp.experiment_id], filter_string=query)
    finally:
        mlflow.set_tracking_uri(previous)
    rows = []
    for _, run in runs.iterrows():
        row = {k: run.get(f"tags.{k}", "") for k in KEYS}
        row.update({m: run.get(f"metrics.{m}") for m in metrics})
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*KEYS, *metrics])
    if len(table):
        table = table.fillna({k: "" for k in KEYS}).sort_values(list(KEYS), kind="stable").reset_index(drop=True)
    return parent, table
