"""W&B and MLflow sinks in a real `fit`, read back from a real MLflow server and W&B's run files.

MLflow: one `mlflow server` per session on 127.0.0.1 (SQLite store, a temp
artifact root), read back through `mlflow.MlflowClient`. W&B: offline runs
(`WANDB_MODE=offline`), read back with W&B's own reader of its `.wandb`
transaction log, `wandb leet inspect --json` (one JSON line per record),
and the media files and table artifacts those records name. What each
tracker holds is compared with the events a recording sink got in the same
run.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import checkout_env, conv_classifier, read_events
from PIL import Image
from test_sinks import Recording  # a user's sink that keeps every event

import keras_cam
from keras_cam.sinks.tags import describe
from keras_cam.sinks.tracking import page_keys

mlflow = pytest.importorskip("mlflow")
wandb = pytest.importorskip("wandb")

X = np.random.default_rng(0).integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
Y = np.arange(12) % 3
CLASSES = ["cat", "dog", "fox"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that a test can stop and start again (same port)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        # The job runner (MLflow's GenAI jobs) is a second process nobody here needs.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the server holds it)
        self.process = subprocess.Popen(
            command, stdout=log, stderr=log, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 300  # a bound for a loaded machine, not a timing test
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server did not start: {self.root / 'server.log'}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)  # the server and its uvicorn worker
            process.wait(60)
        # The port is refused from now on (uvicorn's worker has exited with its group).
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", self.port)) != 0


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tracking(mlflow_server, monkeypatch):
    """MLflow talks to the session's server; W&B writes offline runs under tmp."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    return mlflow.MlflowClient(mlflow_server.uri)


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """Offline W&B. Its settings are read once per process: each run also names its dir."""
    for name, value in {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path),
        "WANDB_DATA_DIR": str(tmp_path / "data"),  # table artifacts are staged here
        "WANDB_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "config"),
        "WANDB_SILENT": "true",
    }.items():
        monkeypatch.setenv(name, value)
    yield tmp_path
    if wandb.run is not None:
        wandb.finish()


class UserLogs(keras.callbacks.Callback):
    """A user's own tracker calls at each epoch end, on the same step axis (the epoch).

    It runs before the CAM callback and first waits for the CAM events queued
    so far, so that the order of records in W&B is the same on any machine.
    """

    def __init__(self, cam: keras_cam.CAMCallback, wandb_run=None, mlflow_run=None):
        super().__init__()
        self.cam, self.wandb_run, self.mlflow_run = cam, wandb_run, mlflow_run

    def on_epoch_end(self, epoch, logs=None):
        self.cam._jobs.join()
        if self.wandb_run is not None:
            wandb.log({"user/loss": logs["loss"]}, step=epoch)
        if self.mlflow_run is not None:
            mlflow.log_metric("user_loss", logs["loss"], step=epoch)


def callback(sinks, log_dir=None, **kwargs):
    return keras_cam.CAMCallback(
        (X[:4], Y[:4]),
        log_dir,
        sinks=sinks,
        class_names=CLASSES,
        preprocess=lambda images: images / 255.0,
        view=keras_cam.ViewOptions(max_images=4),
        **kwargs,
    )


def fit(callbacks, epochs=3):
    model = conv_classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        history = model.fit(X / 255.0, Y, epochs=epochs, verbose=0, callbacks=callbacks)
    return history, [w for w in seen if str(w.message).startswith("keras_cam")]


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# --- reading MLflow back ---------------------------------------------------------------


def artifact_paths(client, run_id, path=None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def artifact_bytes(client, run_id, path, tmp_path) -> bytes:
    local = client.download_artifacts(run_id, path, str(tmp_path / uuid.uuid4().hex))
    return Path(local).read_bytes()


def mlflow_images(client, run_id) -> dict[tuple[str, int], str]:
    """(key, step) -> the artifact of each image logged with `log_image(key=, step=)`."""
    found = {}
    for path in artifact_paths(client, run_id, "images"):
        name = path.split("/", 1)[1]
        if name.endswith(".png"):
            key, _, step, *_ = name[: -len(".png")].split("+")
            found[key.replace("~", "/"), int(step)] = path
    return found


def check_mlflow_run(client, run_id, events, tmp_path) -> None:
    """Every scalar, every image page and the per-image table of every event are in the run."""
    images = mlflow_images(client, run_id)
    for tag in events[0].scalars:
        history = {m.step: m.value for m in client.get_metric_history(run_id, tag)}
        assert history == {e.step: pytest.approx(e.scalars[tag], rel=1e-12) for e in events}
    for event in events:
        for tag, pages in event.images.items():
            for key in page_keys(tag, len(pages)):
                assert (key, event.step) in images, (key, event.step)
        assert len([k for k in images if k[1] == event.step]) == sum(
            len(pages) for pages in event.images.values()
        )
        table = json.loads(
            artifact_bytes(client, run_id, f"cam/per_image/step_{event.step}.json", tmp_path)
        )
        rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
        assert len(rows) == len(event.table) == 4
        for row, expected in zip(rows, event.table, strict=True):
            assert row["step"] == event.step
            for key in ("method", "image", "true", "predicted"):
                assert row[key] == expected[key]
            numbers = {k: v for k, v in expected.items() if isinstance(v, float)}
            assert {"probability", "focus"} <= set(numbers)  # drift from the second event on
            for key, value in numbers.items():
                # log_table writes JSON through pandas: 10 decimals.
                assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-10)
            assert row["overlay"]["type"] == row["picture"]["type"] == "image"
    # The pixels written are the pixels of the event (last event: every page and overlay).
    last = events[-1]
    for tag, pages in last.images.items():
        for key, page in zip(page_keys(tag, len(pages)), pages, strict=True):
            data = artifact_bytes(client, run_id, images[key, last.step], tmp_path)
            np.testing.assert_array_equal(png(data), page)
    for row, expected in zip(rows, last.table, strict=True):
        for column in ("picture", "overlay"):
            data = artifact_bytes(client, run_id, row[column]["filepath"], tmp_path)
            np.testing.assert_array_equal(png(data), expected[column])
    notes = artifact_bytes(client, run_id, "cam/tags.md", tmp_path).decode()
    assert "`cam/gradcam/drift` (gradcam: attention drift)" in notes


# --- reading W&B back -------------------------------------------------------------------


def wandb_records(run_dir: Path) -> list[dict]:
    """Every record of an offline run's `.wandb` log, decoded by `wandb leet inspect --json`."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def wandb_run_dirs(root: Path) -> list[Path]:
    return sorted((root / "wandb").glob("offline-run-*"))


def check_wandb_run(run_dir: Path, events, user_steps=()) -> list[dict]:
    """Every scalar, captioned page and per-image table of every event, at W&B step = epoch."""
    records = wandb_records(run_dir)
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    artifacts = {
        r["artifact"]["client_id"]: {
            entry["path"]: entry["local_path"] for entry in r["artifact"]["manifest"]["contents"]
        }
        for r in records
        if r["type"] == "artifact"
    }
    cam_rows = {row["cam/epoch"]: row for row in history if "cam/epoch" in row}
    assert sorted(cam_rows) == [e.step for e in events]
    for event in events:
        row = cam_rows[event.step]
        assert row["_step"] == event.step
        for tag, value in event.scalars.items():
            assert row[tag] == pytest.approx(value, rel=1e-6)
        for tag, pages in event.images.items():
            for key, page in zip(page_keys(tag, len(pages)), pages, strict=True):
                assert row[f"{key}._type"] == "image-file"
                written = (run_dir / "files" / row[f"{key}.path"]).read_bytes()
                np.testing.assert_array_equal(png(written), page)
                caption = f"{describe(tag)[0]}, epoch {event.step}"
                assert row[f"{key}.caption"].startswith(caption)
        # The table: W&B's table file in the artifact the record names, images beside it.
        client_id = row["cam/per_image.artifact_path"].split("//")[1].split("/")[0]
        files = artifacts[client_id]
        table = json.loads(Path(files["cam/per_image.table.json"]).read_text())
        rows = [dict(zip(table["columns"], cells, strict=True)) for cells in table["data"]]
        assert len(rows) == len(event.table) == 4
        for cells, expected in zip(rows, event.table, strict=True):
            assert cells["step"] == event.step
            for key in ("method", "image", "true", "predicted"):
                assert cells[key] == expected[key]
            for key, value in expected.items():
                if isinstance(value, float):
                    assert cells[key] == pytest.approx(value, rel=1e-6)
            for column in ("picture", "overlay"):
                picture = Path(files[cells[column]["path"]]).read_bytes()
                np.testing.assert_array_equal(png(picture), expected[column])
    for step, loss in user_steps:
        (row,) = [r for r in history if r["_step"] == step]
        assert row["user/loss"] == pytest.approx(loss)
    return history


# --- the tests ----------------------------------------------------------------------------


def test_both_trackers_and_tensorboard_in_one_fit_with_the_users_own_calls(
    tracking, wandb_offline, tmp_path
):
    """The one fit per backend: W&B, MLflow and TensorBoard, each read back in full."""
    recording = Recording()
    run = wandb.init(project="keras-cam-test", dir=wandb_offline)
    with mlflow.start_run() as active:
        cam = callback([keras_cam.WandbSink(), keras_cam.MLflowSink(), recording], tmp_path / "tb")
        history, warned = fit([UserLogs(cam, run, active), cam])
        assert [str(w.message) for w in warned] == []
        # Neither sink ends a run it did not start.
        assert tracking.get_run(active.info.run_id).info.status == "RUNNING"
        assert wandb.run is run
    wandb.finish()
    assert warned == []
    events = recording.events
    assert [e.step for e in events] == [0, 1, 2]
    run_id = active.info.run_id
    check_mlflow_run(tracking, run_id, events, tmp_path)
    losses = history.history["loss"]
    user = {m.step: m.value for m in tracking.get_metric_history(run_id, "user_loss")}
    assert user == {step: pytest.approx(loss) for step, loss in enumerate(losses)}
    (run_dir,) = wandb_run_dirs(wandb_offline)
    check_wandb_run(run_dir, events, user_steps=list(enumerate(losses)))
    tensorboard = read_events(str(tmp_path / "tb"))
    for event in events:
        for tag, value in event.scalars.items():
            assert tensorboard[tag][event.step] == pytest.approx(value, rel=1e-6)


def test_a_missing_tracker_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` finds uninstalled
    with pytest.raises(ImportError, match=r"pip install keras-cam\[mlflow\]"):
        keras_cam.MLflowSink()
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install keras-cam\[wandb\]"):
        keras_cam.WandbSink()


@pytest.mark.slow
def test_mlflow_sink_alone_starts_and_ends_its_own_run(tracking, tmp_path):
    recording = Recording()
    sink = keras_cam.MLflowSink(experiment="keras-cam-alone", run_name="alone")
    _, warned = fit([callback([sink, recording])])
    assert warned == []
    run = tracking.get_run(sink.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "alone"
    assert tracking.get_experiment(run.info.experiment_id).name == "keras-cam-alone"
    check_mlflow_run(tracking, sink.run_id, recording.events, tmp_path)


@pytest.mark.slow
def test_wandb_sink_alone_starts_its_run_and_never_drops_the_users_batch_logs(wandb_offline):
    """The user logs every batch (W&B's step runs ahead of the epoch): nothing is dropped."""
    recording = Recording()
    sink = keras_cam.WandbSink(project="keras-cam-alone", dir=wandb_offline)

    class BatchLogs(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            wandb.log({"user/batch_loss": logs["loss"]})  # W&B's own step, one per call

    cam = callback([sink, recording])
    _, warned = fit([cam, BatchLogs()])
    assert warned == []
    assert wandb.run is None  # the sink finished the run it started
    (run_dir,) = wandb_run_dirs(wandb_offline)
    records = wandb_records(run_dir)
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    batches = 3 * int(np.ceil(len(X) / 32))
    assert sum("user/batch_loss" in row for row in history) == batches
    cam_rows = {row["cam/epoch"]: row for row in history if "cam/epoch" in row}
    assert sorted(cam_rows) == [0, 1, 2]
    for event in recording.events:
        for tag, value in event.scalars.items():
            assert cam_rows[event.step][tag] == pytest.approx(value, rel=1e-6)
    # The cam/* charts plot against cam/epoch, whatever W&B row a record joined.
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    assert {"glob_name": "cam/*", "step_metric": "cam/epoch"}.items() <= {
        k: v for m in metrics for k, v in m.items() if k in ("glob_name", "step_metric")
    }.items()


@pytest.mark.slow
def test_wandb_sink_leaves_a_users_run_open(wandb_offline):
    run = wandb.init(project="keras-cam-users-run", dir=wandb_offline)
    recording = Recording()
    fit([callback([keras_cam.WandbSink(), recording])])
    assert wandb.run is run  # still the user's, still open
    run.log({"user/after": 1.0})
    wandb.finish()
    (run_dir,) = wandb_run_dirs(wandb_offline)
    history = check_wandb_run(run_dir, recording.events)
    assert any("user/after" in row for row in history)


@pytest.mark.slow
def test_mlflow_outage_of_two_epochs_loses_only_those_events(mlflow_server, tracking, tmp_path):
    """The server stops after epoch 0's event and comes back (same port) before epoch 3's."""
    recording = Recording()
    sink = keras_cam.MLflowSink(tracking_uri=mlflow_server.uri)

    class Outage(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            cam._jobs.join()  # the earlier events are written: the outage hits epochs 1 and 2
            if epoch == 1:
                mlflow_server.stop()
            if epoch == 3:
                mlflow_server.start()

    cam = callback([sink, recording])
    try:
        history, warned = fit([Outage(), cam], epochs=5)
    finally:
        if mlflow_server.process is None:
            mlflow_server.start()
    assert len(history.history["loss"]) == 5  # training finished
    assert len(warned) == 1
    assert "does not answer" in str(warned[0].message)
    written = [e.step for e in recording.events]
    assert written == [0, 1, 2, 3, 4]  # every event was made; MLflow has those it could take
    for tag in recording.events[0].scalars:
        steps = [m.step for m in tracking.get_metric_history(sink.run_id, tag)]
        assert sorted(steps) == [0, 3, 4]
    assert {step for _, step in mlflow_images(tracking, sink.run_id)} == {0, 3, 4}
    assert tracking.get_run(sink.run_id).info.status == "FINISHED"


class _StallingTracker(http.server.BaseHTTPRequestHandler):
    """A tracking server that is up (`/health` answers) but fails every request with 503,
    which MLflow's client retries with backoff for minutes: a server going down mid-write."""

    def _answer(self) -> None:
        self.send_response(200 if self.path.rstrip("/").endswith("/health") else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.mark.slow  # the sink's own code, the same on every backend
def test_mlflow_server_failing_mid_write_costs_fit_at_most_the_write_timeout():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingTracker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    recording = Recording()
    sink = keras_cam.MLflowSink(run_id="0" * 32, tracking_uri=uri, write_timeout=1)
    try:
        history, warned = fit([callback([sink, recording])], epochs=3)
    finally:
        server.shutdown()
    assert len(history.history["loss"]) == 3  # training finished
    assert [event.step for event in recording.events] == [0, 1, 2]  # the other sink got all
    assert len(warned) == 1  # one outage: the later events found the first still retrying
    assert "did not take the event at step 0 within write_timeout=1 s" in str(warned[0].message)


def saved_model_and_images(tmp_path: Path) -> tuple[Path, Path]:
    model = conv_classifier()
    path = tmp_path / "model.keras"
    model.save(path)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(X[i]).save(folder / f"photo{i}.png")
    return path, folder


@pytest.mark.slow
def test_cli_explain_logs_overlays_and_results_table_to_mlflow(mlflow_server, tracking, tmp_path):
    model, images = saved_model_and_images(tmp_path)
    experiment = f"cli-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [
            *(str(Path(sys.executable).parent / "keras-cam"), "explain", str(model), str(images)),
            *("--out", str(tmp_path / "out"), "--quiet", "--mlflow", mlflow_server.uri),
        ],
        capture_output=True,
        text=True,
        env=checkout_env(MLFLOW_EXPERIMENT_NAME=experiment),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = tracking.search_runs([tracking.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    paths = artifact_paths(tracking, run.info.run_id)
    overlays = sorted(p for p in paths if p.startswith("overlays/"))
    written = sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir())
    assert [p.split("/", 1)[1] for p in overlays] == written
    for path in overlays:
        data = artifact_bytes(tracking, run.info.run_id, path, tmp_path)
        np.testing.assert_array_equal(png(data), png((tmp_path / "out" / path).read_bytes()))
    assert "results.csv" in paths
    assert "index.html" in paths
    results = "cam/per_image/step_0.json"
    table = json.loads(artifact_bytes(tracking, run.info.run_id, results, tmp_path))
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert sorted(row["file"] for row in rows) == sorted(
        str(images / f) for f in os.listdir(images)
    )
    assert all(row["overlay_image"]["type"] == "image" for row in rows)


@pytest.mark.slow
def test_mlflow_run_page_shows_the_cam_images_in_chromium(mlflow_server, tracking):
    """The run's Model metrics tab, in headless Chromium, shows a loaded image per page key."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    recording = Recording()
    sink = keras_cam.MLflowSink(experiment="keras-cam-browser")
    fit([callback([sink, recording])], epochs=2)
    run = tracking.get_run(sink.run_id)
    expected = {
        key
        for tag, pages in recording.events[-1].images.items()
        for key in page_keys(tag, len(pages))
    }
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1500,4000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    shown_images = """
        return Array.from(document.querySelectorAll('img'))
            .filter(img => img.src.includes('get-artifact?path=images') && img.complete
                           && img.naturalWidth > 0 && img.getBoundingClientRect().width > 0)
            .map(img => decodeURIComponent(img.src.split('path=')[1]));
    """
    try:
        driver.get(
            f"{mlflow_server.uri}/#/experiments/{run.info.experiment_id}/runs/"
            f"{sink.run_id}/model-metrics"
        )

        def all_shown(driver):
            keys = {
                path.split("/", 1)[1].split("+")[0].replace("~", "/")
                for path in driver.execute_script(shown_images)
            }
            return keys if keys >= expected else False

        keys = WebDriverWait(driver, 180, poll_frequency=1).until(all_shown)
    finally:
        driver.quit()
    assert keys == expected
