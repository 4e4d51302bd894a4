"""rosbag2 round trips (mcap and sqlite3, Image and CompressedImage) and byte-level determinism."""
from __future__ import annotations

import numpy as np
import pytest
from rosbags.image import message_to_cvimage
from rosbags.rosbag2 import Reader

from infinipot_eval import synth_cli
from infinipot_eval.bagio import BagError, iter_image_messages, list_image_topics, write_bag
from infinipot_eval.synth_cli import BAG_START_NS, synthesize
from infinipot_eval.world import World
from infinipot_ros.conversion import message_to_rgb


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("compressed", [False, True])
def test_round_trip(tmp_path, storage, compressed):
    world = World(seed=4, seconds=3, fps=2, size=48)
    frames = [(BAG_START_NS + i * 500_000_000 + 7, world.frame(i)) for i in range(world.num_frames)]
    bag = tmp_path / "bag"
    assert write_bag(bag, iter(frames), topic="/cam/front", storage=storage, compressed=compressed,
                     frame_id="front_optical") == 6
    assert list(bag.glob("*.mcap" if storage == "mcap" else "*.db3"))
    [info] = list_image_topics(bag)
    assert (info.topic, info.count) == ("/cam/front", 6)
    assert info.msgtype.endswith("CompressedImage" if compressed else "/Image")
    got = list(iter_image_messages(bag, "/cam/front"))
    assert len(got) == 6
    for (stamp_ns, rgb), (stamp, msg) in zip(frames, got):
        assert stamp == pytest.approx(stamp_ns * 1e-9, abs=1e-9)
        assert msg.header.frame_id == "front_optical"
        out = message_to_rgb(msg)
        reference = message_to_cvimage(msg, "rgb8")  # rosbags-image as the independent oracle
        if compressed:
            assert np.abs(out.astype(int) - rgb).mean() < 4  # JPEG is lossy, but close
            assert np.abs(out.astype(int) - reference).max() <= 1
        else:
            assert np.array_equal(out, rgb) and np.array_equal(reference, rgb)


def test_errors(tmp_path):
    world = World(seed=1, seconds=1, fps=2, size=32)
    bag = tmp_path / "bag"
    write_bag(bag, ((BAG_START_NS + i, world.frame(i)) for i in range(2)))
    with pytest.raises(BagError, match="exists"):
        write_bag(bag, iter([]))
    with pytest.raises(BagError, match="no topic '/nope'"):
        list(iter_image_messages(bag, "/nope"))
    with pytest.raises(BagError, match="not a rosbag2"):
        list_image_topics(tmp_path)
    with pytest.raises(BagError, match="unknown storage"):
        write_bag(tmp_path / "x", iter([]), storage="zip")


def _raw_messages(bag):
    with Reader(bag) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    kwargs = dict(seconds=20, fps=2, size=32, max_questions=6)
    a = synthesize(tmp_path / "a", seed=9, **kwargs)[0].parent
    b = synthesize(tmp_path / "b", seed=9, **kwargs)[0].parent
    c = synthesize(tmp_path / "c", seed=10, **kwargs)[0].parent
    assert _raw_messages(a) == _raw_messages(b)
    assert (a / "questions.yaml").read_bytes() == (b / "questions.yaml").read_bytes()
    assert _raw_messages(a) != _raw_messages(c)
    assert (a / "questions.yaml").read_bytes() != (c / "questions.yaml").read_bytes()


def test_cli_writes_compressed_sqlite_bag(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synth_cli.main(["--seconds", "12", "--seed", "2", "--out", str(out), "--storage", "sqlite3",
                           "--fps", "2", "--size", "32", "--compressed", "--topic", "/camera/left/compressed",
                           "--quiet"]) == 0
    assert "questions" in capsys.readouterr().out
    [info] = list_image_topics(out)
    assert info.topic == "/camera/left/compressed" and info.count == 24
    assert (out / "questions.yaml").is_file()
    assert synth_cli.main(["--seconds", "5", "--seed", "2", "--out", str(out), "--quiet"]) == 2  # exists
