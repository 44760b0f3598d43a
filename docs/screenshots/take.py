"""Re-take the documentation screenshots: the MLflow runs view grouped by stage, a comparison of the
distillation rounds, and the Snakemake report's front page.

Starts ``mlflow ui`` on 127.0.0.1 against a results store and drives a headless Chromium (the
system's ``chromium``, through Playwright) over it; writes PNGs into this folder.

  python docs/screenshots/take.py --store results/mlflow.db --report results/report.html

Needs ``pip install playwright`` and a Chromium (``apt-get install chromium``); downloads nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE = {"width": 1600, "height": 1000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(store: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{store.resolve()}",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            raise RuntimeError("mlflow ui did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def experiment_id(store: Path, name: str) -> str:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(f"sqlite:///{store.resolve()}").get_experiment_by_name(name)
    if exp is None:
        raise SystemExit(f"{store}: no experiment {name!r}")
    return exp.experiment_id


def rounds_run_ids(store: Path, experiment: str, setting: str) -> list[str]:
    """The newest invocation's proposal-recall evaluations of ``setting`` (seed 0): teacher, rounds, control."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{store.resolve()}")
    runs = mlflow.search_runs(experiment_names=[experiment], order_by=["start_time DESC"],
                              filter_string=f"tags.job = 'eval' and tags.setting = '{setting}'")
    if runs.empty:
        return []
    runs = runs[runs["tags.invocation"] == runs["tags.invocation"].iloc[0]]
    runs = runs[runs["tags.variant"].str.startswith("proposals-") & (runs.get("tags.seed", "0") == "0")]
    order = runs["tags.variant"].map(lambda v: (v.endswith("control"), v))  # rounds in order, the control last
    return list(runs.assign(order=order).sort_values("order")["run_id"])


def tidy(page) -> None:
    """The model-training side bar, no assistant panel (best effort)."""
    for action in (lambda: page.get_by_text("Model training", exact=True).first.click(timeout=3000),
                   lambda: page.get_by_role("button", name="Close").first.click(timeout=3000)):
        try:
            action()
        except Exception:  # noqa: BLE001 - absent in other MLflow releases
            pass


def group_by_stage(page) -> None:
    """Open the runs table's "Group by" menu and group by the tag ``stage`` (best effort)."""
    try:
        page.get_by_role("button", name="Group by").first.click(timeout=5000)
        page.keyboard.type("stage")
        page.wait_for_timeout(1000)
        page.get_by_role("menuitemcheckbox", name="stage").first.click(timeout=5000)
        page.keyboard.press("Escape")
    except Exception as err:  # noqa: BLE001 - the UI's wording may change between MLflow releases
        print(f"grouping by stage failed ({type(err).__name__}); the screenshot shows ungrouped runs")


def search(page, text: str) -> None:
    box = page.get_by_placeholder("metrics.rmse", exact=False).first
    box.fill(text)
    box.press("Enter")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("results/mlflow.db"))
    parser.add_argument("--report", type=Path, default=Path("results/report.html"))
    parser.add_argument("--experiment", default="masqclip")
    parser.add_argument("--setting", default="base-novel")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    exp = experiment_id(args.store, args.experiment)
    with mlflow_ui(args.store) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport=SIZE)
        page.goto(f"{url}/#/experiments/{exp}/runs")
        page.wait_for_timeout(4000)
        tidy(page)
        search(page, "tags.job = 'train'")
        page.wait_for_timeout(2000)
        group_by_stage(page)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(args.out / "mlflow-runs-by-stage.png"))
        # The rounds side by side: the setting's evaluations, compared in the chart view.
        search(page, f"tags.job = 'eval' and tags.setting = '{args.setting}'")
        page.wait_for_timeout(2000)
        page.screenshot(path=str(args.out / "mlflow-evaluations.png"))
        rounds = rounds_run_ids(args.store, args.experiment, args.setting)
        if rounds:  # MLflow's compare page: the class-agnostic recall of teacher, round 1, round 2... side by side
            runs = ",".join(f'"{r}"' for r in rounds)
            page.goto(f'{url}/#/compare-runs?runs=[{runs}]&experiments=["{exp}"]')
            page.wait_for_timeout(5000)
            page.screenshot(path=str(args.out / "mlflow-compare-rounds.png"), full_page=True)
        else:
            print(f"no proposal-recall evaluations of {args.setting!r}: no rounds comparison")
        if args.report.is_file():
            page.goto(args.report.resolve().as_uri())
            page.wait_for_timeout(3000)
            page.screenshot(path=str(args.out / "report-front-page.png"), full_page=True)
        browser.close()
    for name in sorted(os.listdir(args.out)):
        if name.endswith(".png"):
            print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
