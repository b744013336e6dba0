"""`MLflowSink`: the callback's scalars, pages and per-image table in an MLflow run."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from keras_cam.sinks.event import Event
from keras_cam.sinks.tracking import (
    import_tracker,
    is_picture,
    page_keys,
    table_columns,
    tags_markdown,
)

# Where the table's pictures go, named by content.
_PICTURES = "cam/per_image/pictures"

# How long the reachability check waits for the tracking server. MLflow's own client
# retries a refused connection for minutes (7 retries, exponential backoff), which would
# hold the writer thread, and through its small queue the training, for all that time.
_REACH_TIMEOUT_S = 5.0


class MLflowSink:
    """Writes events to an MLflow run: metrics, images with a step slider, a table per event.

    Per event: every scalar as a metric at `step=epoch`
    (`cam/<method>/<metric>`, the TensorBoard sink's tag names), every image
    page with `log_image(key=tag, step=epoch)` (shown in the run's image view
    with a step slider; a tag with several pages gets `tag/page_1`, ...),
    the alarms as `cam/alarms/step_<n>.md`, and the per-image table (picture,
    overlay, true and predicted class, probability, every metric) with
    `log_table` as `cam/per_image/step_<n>.json`, sortable in the run's
    artifact view. `cam/tags.md` gives the display name and description of
    every tag written (rewritten when new tags appear). Histograms are not
    written (MLflow has none).

    The run is the one active when the callback's `fit` begins
    (`mlflow.start_run()`), or `run_id`, or else a run this sink creates (and
    ends at the end of each `fit`). Writing goes through an `MlflowClient`
    of the run's tracking URI from the callback's writer thread, so it works
    with a remote server and never touches the training thread's active run.
    Before each event the sink checks that an HTTP tracking server answers
    (5 s): a server that is down fails the event at once, as an outage
    (the callback warns once and writes again when the server is back),
    instead of waiting through MLflow's minutes of retries. A server that
    goes down (or stalls) during an event's requests costs at most
    `write_timeout` seconds: the event is then reported as an outage and
    its requests are left to MLflow's retries on a thread of their own, so
    the callback's writer, and through its queue `fit`, never waits longer.

    Args:
        run_id: the run to write to. Defaults to `None`: the active run, or a
            new one.
        tracking_uri: the tracking server or store, e.g.
            `"http://127.0.0.1:5000"`. Defaults to `None`: MLflow's current
            one (`mlflow.set_tracking_uri`, `MLFLOW_TRACKING_URI`).
        experiment: the experiment of a run this sink creates (created if
            new). Defaults to `None`: `MLFLOW_EXPERIMENT_NAME` or
            `MLFLOW_EXPERIMENT_ID` when set, else MLflow's Default.
        run_name: the name of a run this sink creates. Defaults to `None`.
        table: write the per-image table. Defaults to `True`.
        write_timeout: the most seconds one event may take before it is given
            up as an outage. Defaults to `60.0` (an event takes well under a
            second on a local server).

    Example:

    >>> mlflow.set_tracking_uri("http://127.0.0.1:5000")             # doctest: +SKIP
    >>> with mlflow.start_run():                                     # doctest: +SKIP
    ...     model.fit(x, y, epochs=10, callbacks=[
    ...         keras_cam.CAMCallback(probe, sinks=[keras_cam.MLflowSink()])])
    """

    def __init__(
        self,
        run_id: str | None = None,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        table: bool = True,
        write_timeout: float = 60.0,
    ) -> None:
        if isinstance(write_timeout, bool) or not isinstance(write_timeout, (int, float)):
            raise ValueError(f"write_timeout must be a number of seconds, got {write_timeout!r}.")
        if not write_timeout > 0:
            raise ValueError(f"write_timeout must be > 0 seconds, got {write_timeout!r}.")
        self._mlflow = import_tracker("mlflow", "mlflow")
        self.run_id, self.tracking_uri = run_id, tracking_uri
        self.experiment, self.run_name, self.table = experiment, run_name, table
        self.write_timeout = float(write_timeout)
        self._writing: threading.Thread | None = None  # the last event's requests
        self._client: Any = None
        self._created = False  # this sink created the run (and so ends it)
        self._described: list[str] = []  # the tags in cam/tags.md
        self._uploaded: set[str] = set()  # the table pictures the run has
        self._pool: ThreadPoolExecutor | None = None

    def open(self) -> None:
        mlflow = self._mlflow
        if self.tracking_uri is None:
            self.tracking_uri = mlflow.get_tracking_uri()
        self._check_reachable()
        self._client = client = mlflow.MlflowClient(self.tracking_uri)
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="keras_cam-mlflow")
        if self.run_id is None:
            active = mlflow.active_run()
            if active is not None:
                self.run_id = active.info.run_id
            else:
                run = client.create_run(self._experiment_id(), run_name=self.run_name)
                self.run_id = run.info.run_id
                self._created = True
        elif self._created:  # a later fit, or reopened after an outage
            client.update_run(self.run_id, status="RUNNING")

    def _experiment_id(self) -> str:
        """The id of `experiment` (created if new), else of MLflow's environment or Default."""
        client = self._client
        name = self.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        if not name:
            return os.environ.get("MLFLOW_EXPERIMENT_ID", "0")
        found = client.get_experiment_by_name(name)
        return found.experiment_id if found else client.create_experiment(name)

    def _check_reachable(self) -> None:
        """Raises ConnectionError at once when an HTTP tracking server does not answer."""
        uri = self.tracking_uri
        if not uri.startswith(("http://", "https://")):
            return
        import requests

        try:
            # Any answer (401 behind a proxy too) means the server is up.
            requests.get(uri.rstrip("/") + "/health", timeout=_REACH_TIMEOUT_S)
        except requests.RequestException as error:
            raise ConnectionError(
                f"The MLflow tracking server at {uri} does not answer ({type(error).__name__})."
            ) from error

    def write(self, event: Event) -> None:
        if self._client is None:
            self.open()
        if self._still_sending:
            raise ConnectionError(
                f"The MLflow tracking server at {self.tracking_uri} has not yet taken the "
                f"previous event (still retrying after {self.write_timeout:g} s)."
            )
        self._check_reachable()
        failures: list[BaseException] = []

        def send() -> None:
            try:
                self._send(event)
            except BaseException as error:  # handed to the writer thread below
                failures.append(error)

        self._writing = threading.Thread(target=send, name="keras_cam-mlflow", daemon=True)
        self._writing.start()
        self._writing.join(self.write_timeout)
        if self._writing.is_alive():
            raise ConnectionError(
                f"The MLflow tracking server at {self.tracking_uri} did not take the event "
                f"at step {event.step} within write_timeout={self.write_timeout:g} s (did it "
                f"go down during the write?); its requests go on retrying in the background."
            )
        if failures:
            raise failures[0]

    @property
    def _still_sending(self) -> bool:
        """Whether an earlier event's requests are still running (past `write_timeout`)."""
        return self._writing is not None and self._writing.is_alive()

    def _send(self, event: Event) -> None:
        """The event's requests: metrics, tag notes, texts, pages, the table."""
        client, run_id, step = self._client, self.run_id, event.step
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, float(v), now, step) for tag, v in event.scalars.items()]
        # The numbers first: they are small and what a dashboard plots.
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            client.log_batch(run_id, metrics=metrics[start : start + 1000], synchronous=True)
        tags = [*event.scalars, *event.images, *event.texts]
        if not set(tags) <= set(self._described):  # new tags (drift from the second event)
            self._described += [tag for tag in tags if tag not in self._described]
            client.log_text(run_id, tags_markdown(self._described), "cam/tags.md")
        for tag, text in event.texts.items():
            client.log_text(run_id, text, f"{tag}/step_{step}.md")
        # log_image also sets a run tag (a database write), so pages go one at a time; the
        # table's pictures are files only and go in parallel: one round trip, not dozens.
        for tag, pages in event.images.items():
            for key, page in zip(page_keys(tag, len(pages)), pages, strict=True):
                client.log_image(run_id, page, key=key, step=step, synchronous=True)
        with tempfile.TemporaryDirectory() as folder:
            names, new = self._pictures(event, folder) if self.table else ({}, {})
            uploads = [
                self._pool.submit(client.log_artifact, run_id, path, _PICTURES)
                for path in new.values()
            ]
            for upload in uploads:
                upload.result()
        self._uploaded.update(new)
        if self.table and event.table:
            client.log_table(
                run_id, self._frame(event, names), artifact_file=f"cam/per_image/step_{step}.json"
            )

    def _pictures(self, event: Event, folder: str) -> tuple[dict[int, str], dict[str, str]]:
        """The table's pictures: id -> file name, and the new ones' name -> PNG in `folder`.

        Files are named by content, so the probe images, the same at every
        event, are uploaded once per run.
        """
        names: dict[int, str] = {}
        new: dict[str, str] = {}
        for row in event.table:
            for value in row.values():
                if not is_picture(value) or id(value) in names:
                    continue
                digest = hashlib.sha1(value.tobytes() + str(value.shape).encode()).hexdigest()
                name = names[id(value)] = f"{digest[:20]}.png"
                if name not in self._uploaded and name not in new:
                    new[name] = os.path.join(folder, name)
                    Image.fromarray(value).save(new[name], compress_level=1)
        return names, new

    def _frame(self, event: Event, names: dict[int, str]) -> Any:
        """The per-image table as a DataFrame; pictures as MLflow's image cells.

        An image cell is what `log_table` writes for a `PIL.Image` (`{"type":
        "image", "filepath", "compressed_filepath"}`, shown as a picture in the
        table), pointing at the PNGs uploaded in parallel, so a table costs one
        request per new picture instead of two sequential ones per cell.
        """
        import pandas as pd

        def cell(value: Any) -> Any:
            if not is_picture(value):
                return value
            path = f"{_PICTURES}/{names[id(value)]}"
            return {"type": "image", "filepath": path, "compressed_filepath": path}

        columns = ["step", *table_columns(event.table)]
        rows = [{"step": event.step, **{k: cell(v) for k, v in row.items()}} for row in event.table]
        return pd.DataFrame(rows, columns=columns)

    def log_artifacts(self, folder: str, names: Sequence[str]) -> None:
        """Copies the files and folders `names` under `folder` into the run's artifacts.

        Args:
            folder: a local folder, e.g. the `keras-cam explain` output.
            names: entries of `folder`; missing ones are skipped.
        """
        if self._client is None:
            self.open()
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                self._client.log_artifacts(self.run_id, path, name)
            elif os.path.isfile(path):
                self._client.log_artifact(self.run_id, path)

    def close(self) -> None:
        stalled = self._still_sending
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=not stalled)  # a stalled event's uploads are not waited for
        client, self._client = self._client, None
        if stalled:
            raise ConnectionError(
                f"The MLflow tracking server at {self.tracking_uri} has not taken the last "
                f"event; the run {self.run_id} is left as it is."
            )
        if client is not None and self._created:
            # Closed after a failed write too: MLflow's client would retry a server that is
            # down for minutes, holding the writer (and through its queue, fit) meanwhile.
            self._check_reachable()
            client.set_terminated(self.run_id)
