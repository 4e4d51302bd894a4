"""`infinipot-bag-from-media`: image folders and video files become bags the project's reader and replay take.

Images are generated here (the synthetic world's frames), the video is written with cv2.VideoWriter; the
bags are read back with `bagio` and replayed offline through the engine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from infinipot_eval.bag_from_media import DEFAULT_START_S
from infinipot_eval.bagio import COMPRESSED_TYPE, IMAGE_TYPE, iter_image_messages, list_image_topics
from infinipot_eval.questions import load_questions
from infinipot_eval.replay import RunSpec, replay
from infinipot_eval.world import World
from infinipot_ros.conversion import message_to_rgb

TOOL = str(Path(sys.prefix) / "bin" / "infinipot-bag-from-media")
START_NS = round(DEFAULT_START_S * 1e9)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def _frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    world = World(seed=3, seconds=n, fps=1, size=max(w, h))
    return [np.ascontiguousarray(world.frame(i)[:h, :w]) for i in range(n)]


def _folder(tmp_path: Path, ext: str, n: int = 12) -> tuple[Path, list[np.ndarray]]:
    folder = tmp_path / f"images_{ext}"
    folder.mkdir()
    frames = _frames(n)
    for i in reversed(range(n)):  # written in reverse order: the tool sorts by name
        cv2.imwrite(str(folder / f"frame_{i:03d}.{ext}"), frames[i][..., ::-1])
    (folder / "notes.txt").write_text("not an image")
    return folder, frames


def test_png_folder_to_raw_rgb8_bag_with_template(tmp_path, tiny_adapter):
    folder, frames = _folder(tmp_path, "png")
    bag = tmp_path / "bag"
    done = _run(str(folder), "--out", str(bag), "--fps", "4")
    assert done.returncode == 0, done.stderr
    assert "frames" in done.stderr  # the progress bar
    (topic,) = list_image_topics(bag)
    assert (topic.topic, topic.msgtype, topic.count) == ("/camera/image_raw", IMAGE_TYPE, 12)
    for i, (stamp, msg) in enumerate(iter_image_messages(bag, "/camera/image_raw")):
        assert msg.encoding == "rgb8"
        assert round(stamp * 1e9) == pytest.approx(START_NS + i * 250_000_000, abs=1000)
        assert np.array_equal(message_to_rgb(msg), frames[i])  # PNG is lossless; name order kept
    qset = load_questions(bag / "questions.yaml")
    assert qset.bag.topic == "/camera/image_raw" and qset.bag.seconds == pytest.approx(11 * 0.25)
    assert qset.bag.fps == 4 and len(qset) == 0
    assert "# Add questions" in (bag / "questions.yaml").read_text()
    run = replay(bag, "/camera/image_raw", [], tiny_adapter, RunSpec("infinipot", 32), sample_hz=2.0)
    assert run.messages == 12 and run.frames_sampled == 6 and run.frames_rejected == 0


def test_jpeg_folder_compressed_passes_files_through_unchanged(tmp_path, tiny_adapter):
    folder, _ = _folder(tmp_path, "jpg")
    bag = tmp_path / "bag"
    done = _run(str(folder), "--out", str(bag), "--fps", "10", "--topic", "/cam/compressed", "--compressed",
                "--storage", "sqlite3")
    assert done.returncode == 0, done.stderr
    assert list(bag.glob("*.db3")) and not list(bag.glob("*.mcap"))
    (topic,) = list_image_topics(bag)
    assert (topic.topic, topic.msgtype, topic.count) == ("/cam/compressed", COMPRESSED_TYPE, 12)
    files = sorted(folder.glob("*.jpg"))
    for f, (_, msg) in zip(files, iter_image_messages(bag, "/cam/compressed"), strict=True):
        assert msg.format == "jpeg" and bytes(msg.data) == f.read_bytes()  # byte for byte
    run = replay(bag, "/cam/compressed", [], tiny_adapter, RunSpec("infinipot", 32), sample_hz=2.0)
    assert run.frames_sampled == 3 and run.frames_rejected == 0  # 1.1 s at 2 Hz


def test_timestamps_file_sets_the_stamps(tmp_path):
    folder, _ = _folder(tmp_path, "png", n=4)
    times = [0.0, 0.1, 0.35, 1.0]
    lines = ["# name seconds"] + [f"frame_{i:03d}.png {t}" for i, t in reversed(list(enumerate(times)))]
    (folder / "timestamps.txt").write_text("\n".join(lines) + "\n")
    bag = tmp_path / "bag"
    done = _run(str(folder), "--out", str(bag))  # no --fps: the folder's timestamps.txt is used
    assert done.returncode == 0, done.stderr
    stamps = [round(s * 1e9) for s, _ in iter_image_messages(bag, "/camera/image_raw")]
    assert stamps == pytest.approx([START_NS + round(t * 1e9) for t in times], abs=1000)
    assert load_questions(bag / "questions.yaml").bag.seconds == pytest.approx(1.0)

    absolute = tmp_path / "abs.txt"  # one number a line; UNIX times are kept as they are
    absolute.write_text("1712345678.5\n1712345678.75\n1712345679.0\n1712345679.5\n")
    done = _run(str(folder), "--out", str(tmp_path / "abs"), "--timestamps", str(absolute))
    assert done.returncode == 0, done.stderr
    first = next(iter_image_messages(tmp_path / "abs", "/camera/image_raw"))[0]
    assert first == pytest.approx(1712345678.5)


@pytest.mark.parametrize(("content", "message"), [
    ("0.0\n0.5\n0.5\n0.9\n", "increase strictly"),
    ("0.0\n0.5\n", "2 times for 4 frames"),
    ("frame_000.png 0\nframe_001.png 1\nframe_002.png 2\n", "images without a time ['frame_003.png']"),
    ("0.0\nframe_001.png 1\n", "mixes"),
])
def test_bad_timestamps_fail_clearly_and_leave_no_bag(tmp_path, content, message):
    folder, _ = _folder(tmp_path, "png", n=4)
    stamps = tmp_path / "t.txt"
    stamps.write_text(content)
    done = _run(str(folder), "--out", str(tmp_path / "bag"), "--timestamps", str(stamps))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "bag").exists()


def test_bad_inputs_fail_clearly(tmp_path):
    folder, _ = _folder(tmp_path, "png", n=3)
    done = _run(str(folder), "--out", str(tmp_path / "bag"))  # no rate at all
    assert done.returncode == 2 and "--fps" in done.stderr
    (folder / "frame_001.png").write_bytes(b"not a png")
    done = _run(str(folder), "--out", str(tmp_path / "bag"), "--fps", "5")
    assert done.returncode == 2 and "frame_001.png: OpenCV cannot decode" in done.stderr, done.stderr
    assert not (tmp_path / "bag").exists()
    done = _run(str(tmp_path / "nothing.mp4"), "--out", str(tmp_path / "bag2"), "--fps", "5")
    assert done.returncode == 2 and "no such file or folder" in done.stderr


def test_video_file_to_bag_at_its_own_frame_rate(tmp_path, tiny_adapter):
    video = tmp_path / "clip.avi"
    frames = _frames(20)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()

    for compressed in (False, True):
        bag = tmp_path / f"bag{int(compressed)}"
        done = _run(str(video), "--out", str(bag), *(["--compressed"] if compressed else []))
        assert done.returncode == 0, done.stderr
        msgs = list(iter_image_messages(bag, "/camera/image_raw"))
        assert len(msgs) == 20
        assert [round(s * 1e9) for s, _ in msgs] == pytest.approx([START_NS + i * 200_000_000 for i in range(20)],
                                                                   abs=1000)
        for f, (_, msg) in zip(frames, msgs):  # lossy codec: close, not equal
            assert np.abs(message_to_rgb(msg).astype(int) - f).mean() < 12
        assert load_questions(bag / "questions.yaml").bag.fps == pytest.approx(5.0)
    run = replay(tmp_path / "bag1", "/camera/image_raw", [], tiny_adapter, RunSpec("infinipot", 32))
    assert run.frames_sampled == 8 and run.frames_rejected == 0  # 3.8 s at 2 Hz
