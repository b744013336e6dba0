"""CAMCallback under tf.distribute and Keras' distribution API, each run in its own processes.

The chief's images must equal a single-process run's on the same weights, and
only the chief may write.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import checkout_env, conv_classifier, read_events

import keras_cam

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def start(mode, out, backend, **env):
    environment = checkout_env(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", **env)
    return subprocess.Popen(
        [sys.executable, str(HERE / "distributed_worker.py"), mode, str(out)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, timeout=150):
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def assert_chief_images_match_a_single_process(out):
    events = read_events(str(out / "logs_0"))
    assert sorted(events["cam/gradcam"]) == [0, 1]
    assert sorted(events["cam/scorecam/topk"]) == [0, 1]
    model = conv_classifier()
    with np.load(out / "weights_0.npz") as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    probe = np.load(out / "probe.npy")
    expected = keras_cam.overlay(probe, keras_cam.explain(model, probe).heatmaps)
    np.testing.assert_array_equal(np.stack(events["cam/gradcam"][1]), expected)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_mirrored_strategy_on_two_cpu_devices(tmp_path):
    report = finish(start("mirrored", tmp_path, "tensorflow"))
    assert report["traces"] == 1
    assert_chief_images_match_a_single_process(tmp_path)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.distribute")
def test_multi_worker_mirrored_strategy_only_the_chief_writes(tmp_path):
    """Two worker processes on 127.0.0.1 (see distributed_worker.py for why without fit)."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = [
        start(
            "multiworker",
            tmp_path,
            "tensorflow",
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        for index in range(2)
    ]
    try:
        reports = [finish(process, timeout=110) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [report["explained"] for report in reports] == [True, False]
    assert reports[0]["traces"] == 1
    assert not (tmp_path / "logs_1").exists()  # the other worker wrote nothing
    assert_chief_images_match_a_single_process(tmp_path)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="started from one pass")
def test_keras_data_parallel_under_jax_on_two_virtual_devices(tmp_path):
    report = finish(
        start(
            "dataparallel",
            tmp_path,
            "jax",
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
            JAX_PLATFORMS="cpu",
        )
    )
    assert report["traces"] == 1
    assert_chief_images_match_a_single_process(tmp_path)
