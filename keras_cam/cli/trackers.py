"""`keras-cam explain --mlflow / --wandb`: the run's overlays and results table in a tracker.

Once the output folder is written, its overlays and `results.csv` go to the
trackers asked for, through the same sinks the callback uses
(`keras_cam.MLflowSink`, `keras_cam.WandbSink`): one event at step 0 with
each overlay as an image and the results table, one row per file and
method, with the overlay picture in the row. MLflow also keeps the folder's
`overlays/`, `results.csv` and `index.html` as the run's artifacts. The
sinks are opened before any image is explained, so a missing package or a
tracking server that does not answer stops the command before the work.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
from typing import Any

import numpy as np

from keras_cam.sinks.event import Event

logger = logging.getLogger("keras_cam.cli")


class TrackerError(Exception):
    """A tracker asked for cannot be used (its package is missing, its server is down)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--mlflow [URI]` and `--wandb [PROJECT]` to the `explain` parser."""
    parser.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="TRACKING_URI",
        help="also log the overlays and the results table to an MLflow run (the active "
        "MLFLOW_RUN_ID, else a new run in MLFLOW_EXPERIMENT_NAME); TRACKING_URI defaults "
        "to MLflow's own (MLFLOW_TRACKING_URI). Needs pip install keras-cam[mlflow]",
    )
    parser.add_argument(
        "--wandb",
        nargs="?",
        const="",
        default=None,
        metavar="PROJECT",
        help="also log the overlays and the results table to a new W&B run in PROJECT "
        "(WANDB_MODE=offline works without a server). Needs pip install keras-cam[wandb]",
    )


def open_trackers(args: argparse.Namespace) -> list[Any]:
    """The sinks of the trackers asked for, opened (their runs started).

    Raises:
        TrackerError: a package is missing or a tracking server does not answer.
    """
    sinks: list[Any] = []
    name = f"keras-cam explain {os.path.basename(args.model)}"
    try:
        if getattr(args, "mlflow", None) is not None:
            from keras_cam.sinks.mlflow import MLflowSink

            run_id = os.environ.get("MLFLOW_RUN_ID")
            sinks.append(MLflowSink(run_id, args.mlflow or None, run_name=name))
        if getattr(args, "wandb", None) is not None:
            from keras_cam.sinks.wandb import WandbSink

            sinks.append(WandbSink(project=args.wandb or None, name=name, job_type="explain"))
        for sink in sinks:
            sink.open()
    except (ImportError, ConnectionError) as error:
        for sink in sinks:
            close_quietly(sink)
        raise TrackerError(str(error)) from error
    return sinks


def close_quietly(sink: Any) -> None:
    """Closes `sink`, logging (not raising) an error."""
    try:
        sink.close()
    except Exception as error:  # the error that brought us here says more
        logger.debug("closing %r failed: %s", sink, error)


def _picture(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def folder_event(out: str) -> Event:
    """The output folder as one event: each overlay an image, `results.csv` the table."""
    with open(os.path.join(out, "results.csv"), newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    images, table = {}, []
    for row in rows:
        overlay = row.get("overlay", "")
        path = os.path.join(out, overlay)
        picture = _picture(path) if overlay and os.path.isfile(path) else None
        if picture is not None:
            # MLflow's image keys take letters, digits, _ - . space and / only.
            images[re.sub(r"[^\w\-. /]", "_", os.path.splitext(overlay)[0])] = picture[None]
        table.append({**row, "overlay_image": picture} if picture is not None else row)
    return Event(step=0, images=images, table=table)


def log_run(sinks: list[Any], out: str) -> bool:
    """Writes the written folder to each tracker and closes it; False if one failed."""
    if not sinks:
        return True
    from keras_cam.sinks.mlflow import MLflowSink

    ok = True
    event = folder_event(out)
    for sink in sinks:
        try:
            sink.write(event)
            if isinstance(sink, MLflowSink):
                sink.log_artifacts(out, ("overlays", "results.csv", "index.html"))
            logger.info("logged the overlays and results table to %s", _where(sink))
        except Exception as error:
            logger.error("could not log to %s: %s: %s", _where(sink), type(error).__name__, error)
            ok = False
        finally:
            close_quietly(sink)
    return ok


def _where(sink: Any) -> str:
    run_id = getattr(sink, "run_id", None)
    if run_id is not None:
        return f"MLflow run {run_id} at {sink.tracking_uri}"
    run = getattr(sink, "run", None)
    return f"W&B run {run.id}" if run is not None else type(sink).__name__
