"""The command line never touches the user's files and survives every input (issue 21).

Each defect is checked through the real `keras-cam` console script in a subprocess;
the user's files are compared byte for byte afterwards where the command could lose
them. A few fast checks of the pieces (walks, loading) run in process.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import checkout_env, conv_classifier
from PIL import Image
from sheet_html import parse_sheet

from keras_cam.cli.image_files import find_images, load_image
from keras_cam.render.overlay import colorize

SIZE = 24


def command() -> list[str]:
    script = Path(sys.executable).parent / "keras-cam"
    return [str(script)] if script.exists() else [sys.executable, "-m", "keras_cam.cli"]


def run_command(
    *args: str, cwd: Path, env: dict | None = None, **popen
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command(), *args],
        cwd=cwd,
        env=env or checkout_env(TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        timeout=300,
        **popen,
    )


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    conv_classifier(size=SIZE, classes=3).save(path)
    return path


def save_png(path: Path | bytes, seed: int, size: int = SIZE) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")


def snapshot(folder: Path) -> dict[bytes, str]:
    """Every file under `folder` (names as bytes) -> SHA-256 of its content."""
    result = {}
    for root, _, names in os.walk(os.fsencode(folder)):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                result[os.path.relpath(path, os.fsencode(folder))] = hashlib.sha256(
                    file.read()
                ).hexdigest()
    return result


def read_rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def sheet_summary(out: Path) -> str:
    page = (out / "index.html").read_text(encoding="utf-8")
    return page.split('<p class="summary">')[1].split("</p>")[0]


def skipped_lines(out: Path) -> list[list[str]]:
    path = out / "skipped.txt"
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def unescape(cell: str) -> str:
    """A CSV cell as written before the formula escape (a leading ' before = + - @)."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in ("=", "+", "-", "@", "\t", "\r") else cell


def assert_reports_agree(out: Path, stdout: str) -> None:
    """results.csv, index.html, skipped.txt, status.json and the printed summary agree."""
    rows = read_rows(out)
    sheet = parse_sheet((out / "index.html").read_text(encoding="utf-8"))
    status = json.loads((out / "status.json").read_text())
    explained = sorted({unescape(row["file"]) for row in rows})
    assert sorted({row["data-file"] for row in sheet.rows}) == explained
    assert status["explained"] == len(explained)
    assert f"{len(explained)} images explained" in sheet_summary(out)
    assert f"{len(explained)} images explained" in stdout
    listed = skipped_lines(out)
    not_done = status["skipped"] + status["failed"] + status["not_processed"]
    assert len(listed) == not_done + status["unreadable_folders"]
    page = (out / "index.html").read_text(encoding="utf-8")
    for path, _ in listed:
        assert f"not explained: {path}" in stdout
        assert html.escape(path) in page
    for row in rows:
        assert (out / row["overlay"].lstrip("'")).is_file()


# ---- 1. --overwrite removes only what the command wrote; inputs inside --out refused


@pytest.mark.slow
def test_overwrite_never_removes_the_users_files(model_path, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for k in range(2):
        save_png(images / f"photo{k}.png", k)
    (images / "notes.txt").write_text("irreplaceable")
    (tmp_path / "results.csv").write_text("the user's own table\n")
    before = snapshot(tmp_path)

    # --out . holds the input folder `images`, where the command writes its thumbnails.
    done = run_command(
        "explain", str(model_path), "images", "--out", ".", "--overwrite", cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert b"lies inside what keras-cam writes" in done.stderr
    assert snapshot(tmp_path) == before

    # A results.csv the command did not write is never overwritten, even with --overwrite.
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.csv").write_bytes(b"mine")
    done = run_command(
        "explain", str(model_path), "images", "--out", "other", "--overwrite", cwd=tmp_path
    )
    assert done.returncode == 2
    assert b"results.csv, which keras-cam did not write" in done.stderr
    assert (other / "results.csv").read_bytes() == b"mine"

    # --out inside the input folder: allowed; a second run with --overwrite removes only
    # its own files (and does not explain its own overlays), the user's stay byte for byte.
    out = images / "cams"
    first = run_command("explain", str(model_path), "images", "--out", str(out), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (out / "overlays" / "my_note.txt").write_text("mine, in the command's folder")
    (out / "mine.png").write_bytes(b"user bytes")
    # The user's files: everything but what the first run wrote (its manifest lists it).
    user_files = {
        name: digest
        for name, digest in snapshot(images).items()
        if not name.startswith(b"cams/") or name in (b"cams/overlays/my_note.txt", b"cams/mine.png")
    }
    second = run_command(
        "explain",
        str(model_path),
        "images",
        "--out",
        str(out),
        "--overwrite",
        "--limit",
        "1",
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert [row["file"] for row in read_rows(out)] == ["images/photo0.png"]
    after = snapshot(images)
    assert {name: after.get(name) for name in user_files} == user_files
    assert sorted(os.listdir(out / "overlays")) == ["00000_photo0_gradcam.png", "my_note.txt"]
    assert (tmp_path / "results.csv").read_text() == "the user's own table\n"


# ---- 2. one bad name fails only that file; safe, unique names; the reports agree


@pytest.mark.slow
def test_any_file_name_is_explained_and_the_reports_agree(model_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    names = [
        b"a.png",
        b"b\xffc.png",  # not UTF-8: legal on Linux
        ("\U0001d400" * 61 + ".png").encode(),  # 244 bytes of stem: too long with a suffix
        b"a b.png",
        b"a_b.png",  # same safe stem as "a b"
        b"<script>.png",
    ]
    for seed, name in enumerate(names):
        save_png(os.path.join(os.fsencode(photos), name), seed)
    (photos / "broken.png").write_bytes(b"\x89PNG but not really")
    before = snapshot(photos)
    out = tmp_path / "out"
    done = run_command(
        "explain",
        str(model_path),
        "photos",
        "--out",
        "out",
        "--targets",
        "top2",
        "--method",
        "gradcam,gradcam++",
        "--batch-size",
        "4",
        cwd=tmp_path,
    )
    stdout = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    assert b"Traceback" not in done.stderr
    assert snapshot(photos) == before
    rows = read_rows(out)
    assert len(rows) == len(names) * 2 * 2
    assert "photos/b\\xffc.png" in {row["file"] for row in rows}
    assert [line[0] for line in skipped_lines(out)] == ["photos/broken.png"]
    assert "1 skipped" in stdout
    outputs = os.listdir(out / "overlays") + os.listdir(out / "images")
    assert len(set(outputs)) == len(names) * (4 + 1)
    for name in outputs:
        assert name.isascii(), name
        assert len(name.encode()) < 100, name
    assert_reports_agree(out, stdout)


# ---- 3. an interrupted run is marked, and --resume finishes it


@pytest.mark.slow
def test_interrupted_run_is_marked_and_resumes(model_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, name in enumerate(["a", "b", "x", "y"]):
        save_png(photos / f"{name}.png", seed)
    # A named pipe blocks the command when it opens "m.png", after a and b: the test
    # interrupts it there, whatever the speed of the machine.
    os.mkfifo(photos / "m.png")
    out = tmp_path / "out"
    base = ["explain", str(model_path), "photos", "--out", "out", "--batch-size", "1", "--quiet"]
    process = subprocess.Popen(
        [*command(), *base],
        cwd=tmp_path,
        env=checkout_env(TF_CPP_MIN_LOG_LEVEL="3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    journal = out / ".keras-cam" / "journal.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count('"rows"') == 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]

    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted"
    assert (status["explained"], status["not_processed"]) == (2, 3)
    page = (out / "index.html").read_text()
    assert "Interrupted: 3 of 5 images not processed" in page
    assert "interrupted" in stdout
    not_processed = [path for path, why in skipped_lines(out) if why.startswith("not processed")]
    assert not_processed == ["photos/m.png", "photos/x.png", "photos/y.png"]
    assert len(os.listdir(out / "overlays")) == 2  # no overlay without its row
    assert_reports_agree(out, stdout)

    # --resume with other options is refused before anything changes.
    report = snapshot(out)
    changed = run_command(*base, "--resume", "--alpha", "0.7", cwd=tmp_path)
    assert changed.returncode == 2
    assert b"--alpha 0.4 then, 0.7 now" in changed.stderr
    assert snapshot(out) == report

    (photos / "m.png").unlink()
    save_png(photos / "m.png", 9)
    resumed = run_command(*base, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert b"3 of 5 images left to do" in resumed.stderr
    rows = read_rows(out)
    assert [row["file"] for row in rows] == [f"photos/{n}.png" for n in "abmxy"]
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    assert "Interrupted" not in (out / "index.html").read_text()
    assert not (out / "skipped.txt").exists()
    assert len(os.listdir(out / "overlays")) == 5
    assert_reports_agree(out, resumed.stdout.decode())


# ---- 4. a second run into a held --out is refused


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="holds the lock with fcntl")
def test_second_run_into_a_held_out_is_refused(model_path, tmp_path):
    import fcntl

    photos = tmp_path / "photos"
    photos.mkdir()
    save_png(photos / "a.png", 0)
    before = snapshot(photos)
    out = tmp_path / "out"
    (out / ".keras-cam").mkdir(parents=True)
    # Hold --out as a running keras-cam does (an flock, released when a process ends).
    with open(out / ".keras-cam" / "lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = run_command("explain", str(model_path), "photos", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert b"Another keras-cam run is writing into --out out" in done.stderr
    assert sorted(os.listdir(out)) == [".keras-cam"]
    assert snapshot(photos) == before
    # Released: the same command now runs, the lock left by a dead holder is no obstacle.
    again = run_command("explain", str(model_path), "photos", "--out", "out", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(read_rows(out)) == 1
    assert snapshot(photos) == before


# ---- 5. unreadable sub-folders are reported


def _without_root_powers() -> list[str]:
    """A command prefix under which root, too, obeys folder permissions."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root reads every folder, and setpriv (to drop that power) is missing")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_folder_is_listed(model_path, tmp_path):
    (tmp_path / "photos" / "locked").mkdir(parents=True)
    save_png(tmp_path / "photos" / "a.png", 0)
    save_png(tmp_path / "photos" / "locked" / "b.png", 1)
    prefix = _without_root_powers()
    os.chmod(tmp_path / "photos" / "locked", 0o000)
    try:
        done = subprocess.run(
            [*prefix, *command(), "explain", str(model_path), "photos", "--out", "out"],
            cwd=tmp_path,
            env=checkout_env(TF_CPP_MIN_LOG_LEVEL="3"),
            capture_output=True,
            timeout=300,
        )
    finally:
        os.chmod(tmp_path / "photos" / "locked", 0o755)
    stdout = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "1 folders not readable" in stdout
    ((path, why),) = skipped_lines(tmp_path / "out")
    assert path == "photos/locked"
    assert why.startswith("skipped: folder not readable (PermissionError")
    assert "photos/locked" in (tmp_path / "out" / "index.html").read_text()
    assert_reports_agree(tmp_path / "out", stdout)


# ---- 6. symbolic-link loops: each real path once


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_walks_and_globs_visit_each_real_path_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("one", "two", "two/sub"):
        Path(folder).mkdir()
    for path in ("one/a.png", "two/a.png", "two/sub/b.png"):
        save_png(Path(path), 0, size=4)
    os.symlink(".", "one/loop")
    os.symlink(".", "two/l1")
    os.symlink("..", "two/sub/up")
    os.symlink("sub", "two/l2")
    os.symlink("a.png", "two/same.png")
    expected_two = ["two/a.png", "two/sub/b.png"]
    assert find_images(["one/**/*.png"]).files == ["one/a.png"]
    assert find_images(["one"]).files == ["one/a.png"]
    assert sorted(find_images(["two/**/*.png"]).files) == expected_two
    assert sorted(find_images(["two"]).files) == expected_two
    assert find_images(["**/a.png"]).files == ["one/a.png", "two/a.png"]
    assert find_images(["two/*.png"]).files == ["two/a.png"]
    assert sorted(find_images(["t*"]).files) == expected_two  # a matched folder: all its files
    assert find_images(["one", "one/a.png", "one/*.png"]).files == ["one/a.png"]
    assert find_images(["nowhere/**/*.png"]).missing == ["nowhere/**/*.png"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links")
def test_command_explains_each_image_once_through_link_loops(model_path, tmp_path):
    (tmp_path / "two").mkdir()
    save_png(tmp_path / "two" / "a.png", 0)
    os.symlink(".", tmp_path / "two" / "l1")
    os.symlink(".", tmp_path / "two" / "l2")
    done = run_command(
        "explain", str(model_path), "two/**/*.png", "two", "--out", "out", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [row["file"] for row in read_rows(tmp_path / "out")] == ["two/a.png"]


# ---- 7. large images load reduced; any per-image failure fails only that image


def test_large_16bit_image_loads_reduced_without_a_float_copy(tmp_path):
    path = tmp_path / "big16.png"
    height, width = 3000, 2000
    gradient = np.linspace(0, 65535, width).astype(np.uint16)[None].repeat(height, 0)
    Image.fromarray(gradient).save(path)  # mode I;16
    tracemalloc.start()
    try:
        loaded = load_image(str(path), (SIZE, SIZE), "pad")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A float64 copy of the decoded image alone is 48 MB; numpy's arrays stay tiny.
    assert peak < 4_000_000, peak
    assert loaded.pixels.shape == (SIZE, SIZE, 3)
    assert loaded.conversion == "16-bit"
    # The placement still maps to the file's own pixels: a fitted pixel's centre lies
    # (k + 0.5) / scale - 0.5 into the file, scale = 24 / 3000 on both axes.
    placement = loaded.placement
    assert (placement.width, placement.height) == (width, height)
    inner = round(width * SIZE / height)
    left = (SIZE - inner) // 2
    assert placement.to_original(left, 0) == (62, 62)
    assert placement.to_original(left + inner - 1, SIZE - 1) == (1937, 2937)
    # Gray levels follow the gradient (16-bit / 257), left dark, right bright.
    row = loaded.pixels[SIZE // 2, left : left + inner, 0].astype(int)
    assert row[0] < 20
    assert row[-1] > 235
    assert np.all(np.diff(row) >= 0)


def test_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 2400), (200, 30, 30)).save(path, quality=95)
    loaded = load_image(str(path), (SIZE, SIZE), "crop")
    assert loaded.placement.width == 4000
    assert loaded.placement.height == 2400
    # Unreduced, the crop's first pixel centre lies at (800 + 0.5 / 0.01 - 0.5, 49.5);
    # reduced, within a few of the file's pixels (the reduction rounds to whole pixels).
    x, y = loaded.placement.to_original(0, 0)
    assert abs(x - 849.5) <= 8
    assert abs(y - 49.5) <= 8
    assert np.abs(loaded.pixels.astype(int) - (200, 30, 30)).max() <= 3


@pytest.mark.slow
def test_memory_error_on_one_image_does_not_end_the_run(model_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, name in enumerate(["a", "boom", "c"]):
        save_png(photos / f"{name}.png", seed)
    # A real subprocess of the console script whose Pillow runs out of memory on one file.
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import PIL.Image\n"
        "_open = PIL.Image.open\n"
        "def _failing_open(path, *args, **kwargs):\n"
        "    if str(path).endswith('boom.png'):\n"
        "        raise MemoryError('out of memory decoding boom.png')\n"
        "    return _open(path, *args, **kwargs)\n"
        "PIL.Image.open = _failing_open\n"
    )
    env = checkout_env(TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([str(inject), env["PYTHONPATH"]])
    done = run_command("explain", str(model_path), "photos", "--out", "out", cwd=tmp_path, env=env)
    stdout = done.stdout.decode()
    assert done.returncode == 1, done.stderr.decode()[-2000:]  # something failed
    assert [row["file"] for row in read_rows(tmp_path / "out")] == ["photos/a.png", "photos/c.png"]
    assert skipped_lines(tmp_path / "out") == [
        ["photos/boom.png", "failed: MemoryError: out of memory decoding boom.png"]
    ]
    assert "1 failed" in stdout
    assert_reports_agree(tmp_path / "out", stdout)


# ---- 8, 14, 16: one run with hostile names, a flat map and a skipped file


@pytest.fixture(scope="module")
def hostile_run(model_path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    folder = tmp_path_factory.mktemp("hostile")
    save_png(folder / "=HYPERLINK(evil).png", 1)
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(folder / "+flat.png")
    (folder / "@broken.png").write_bytes(b"not an image")
    (folder / "names.txt").write_text("=2+3\n@SUM(1,1)\n-1+1\n")
    done = run_command(
        "explain",
        str(model_path),
        "=HYPERLINK(evil).png",
        "+flat.png",
        "@broken.png",
        "--out",
        "out",
        "--class-names",
        "names.txt",
        "--targets",
        "top3",
        "--quiet",
        "--colormap",
        "viridis",
        cwd=folder,
    )
    return folder / "out", done


@pytest.mark.slow
def test_csv_cells_cannot_become_formulas(hostile_run):
    out, done = hostile_run
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(out)
    assert {row["file"] for row in rows} == {"'=HYPERLINK(evil).png", "'+flat.png"}
    assert {row["name"] for row in rows} == {"'=2+3", "'@SUM(1,1)", "'-1+1"}
    dangerous = ("=", "+", "-", "@", "\t", "\r")
    with open(out / "results.csv", newline="", encoding="utf-8") as file:
        for cells in csv.reader(file):
            assert not any(cell.startswith(dangerous) for cell in cells), cells
    # Numbers stay numbers.
    assert all(float(row["probability"]) >= 0 for row in rows)


@pytest.mark.slow
def test_flat_map_has_no_peak(hostile_run):
    out, done = hostile_run
    rows = read_rows(out)
    flat = [row for row in rows if row["file"] == "'+flat.png"]
    assert len(flat) == 3
    # An all-zero image through ReLU convolutions with random weights: constant features,
    # so every class's map is flat.
    assert all(row["peak_x"] == row["peak_y"] == "" for row in flat)
    peaked = [row for row in rows if row["file"] != "'+flat.png"]
    assert all(0 <= int(row["peak_x"]) < SIZE and 0 <= int(row["peak_y"]) < SIZE for row in peaked)
    assert "3 flat maps (no peak)" in done.stdout.decode()
    assert "3 flat maps (no peak)" in sheet_summary(out)


@pytest.mark.slow
def test_contact_sheet_names_skipped_files_and_shows_the_colour_scale(hostile_run):
    out, done = hostile_run
    page = (out / "index.html").read_text()
    assert "1 not explained" in page
    assert "<code>@broken.png</code>: skipped: UnidentifiedImageError" in page
    stops = colorize(np.linspace(0.0, 1.0, 11)[None, None, :], "viridis")[0, 0]
    gradient = ", ".join("#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in stops)
    assert f"linear-gradient(to right, {gradient})" in page
    assert_reports_agree(out, done.stdout.decode())
