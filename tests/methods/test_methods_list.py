"""Every registered method states its paper and cost; `keras-cam methods` lists them all."""

import subprocess

from cli_runs import command
from conftest import checkout_env

import keras_cam
from keras_cam.cli.methods_list import method_entries
from keras_cam.methods import get_method
from keras_cam.methods.registry import registered_methods


def test_every_registered_method_has_a_paper_and_a_cost():
    for name, method in registered_methods().items():
        assert method.paper.strip(), f"{name} has no paper"
        assert method.cost.strip(), f"{name} has no cost"
        assert get_method(name).paper == method.paper


def test_listing_read_from_the_sources_equals_the_classes():
    """The `ast` reading (no Keras import) gives what the imported classes say."""
    entries = method_entries()
    assert sorted(entries) == sorted(keras_cam.available_methods())
    for name, method in registered_methods().items():
        entry = entries[name]
        assert (entry.description, entry.paper, entry.cost) == (
            method.description,
            method.paper,
            method.cost,
        )


def test_keras_cam_methods_subprocess_lists_every_method(tmp_path):
    done = subprocess.run(
        [*command(), "methods"],
        cwd=tmp_path,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    names, details = lines[0::2], lines[1::2]
    assert [line.split()[0] for line in names] == sorted(keras_cam.available_methods())
    for name_line, detail in zip(names, details, strict=True):
        method = get_method(name_line.split()[0])
        assert name_line.split(None, 1)[1] == method.description
        assert detail.strip() == f"paper: {method.paper} · cost: {method.cost}"
