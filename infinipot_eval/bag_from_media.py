"""`infinipot-bag-from-media`: turn a folder of images or a video file into a rosbag2 the tools can replay.

    infinipot-bag-from-media INPUT --out BAG [--fps F] [--topic /camera/image_raw] [--compressed]
                             [--storage mcap|sqlite3] [--timestamps FILE] [--start-time 1700000000]

Why: users' own recordings, and the public video-QA sets (RVS, OpenEQA, NaVQA), ship frames or video files,
not bags; `infinipot-eval`, `infinipot_bag_player` and `ros2 bag play` need a bag.

INPUT is a folder of images (every file with an image extension, sorted by name) or a video file (read
with OpenCV). Messages:

- default: `sensor_msgs/Image`, rgb8, decoded with OpenCV (grey and alpha images become rgb8);
- `--compressed`: `sensor_msgs/CompressedImage`. JPEG and PNG files are passed through byte for byte
  (`format` "jpeg" / "png"), never re-encoded; other still formats are encoded to PNG (lossless), video
  frames to JPEG (quality 95), since a video has no per-frame files to pass through.

Stamps (header stamp = receive time in the bag, in nanoseconds): frame i at `start + i / fps`. `--fps`
defaults to the video's own frame rate; a folder needs `--fps` unless it has a timestamps file. A
timestamps file (`--timestamps FILE`, or `timestamps.txt` inside an image folder) is plain text, one
frame per line, blank lines and `#` comments ignored, in one of two forms:

    <seconds>               # the i-th number is the i-th frame's time (folder: in name order; video: in order)
    <file name> <seconds>   # image folders only: the time of that file (every image listed once)

Seconds may be absolute (e.g. UNIX time) or relative; they must increase strictly. With absolute times
(>= 1e8 s) the stamps are the times themselves; relative times are added to `--start-time` (a fixed
default, so the same input gives the same bag; a stamp of 0 would read as "unset" in ROS).

Also writes BAG/questions.yaml: a question-file template (docs/evaluation.md) with the bag's topic, frame
rate and duration and no questions yet; add questions (stream seconds since the first frame) by hand.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml
from tqdm import tqdm

from .bagio import (COMPRESSED_TYPE, IMAGE_TYPE, BagError, compressed_msg_from_bytes, make_image_msg,
                    write_messages)
from .questions import FORMAT_VERSION, questions_from_dict

__all__ = ["IMAGE_EXTENSIONS", "MediaError", "MediaSource", "BagSummary", "open_media", "read_timestamps",
           "write_question_template", "bag_from_media", "main"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
TIMESTAMPS_FILE = "timestamps.txt"
#: header stamp of the first frame when times are relative (2023-11-14T22:13:20Z, as infinipot-synth)
DEFAULT_START_S = 1_700_000_000.0
#: times at or above this are taken as absolute (UNIX seconds), below as relative to the start
ABSOLUTE_TIME_S = 1e8
_PASS_THROUGH = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}
VIDEO_JPEG_QUALITY = 95


class MediaError(ValueError):
    """Input that cannot be turned into a bag (unreadable file, bad timestamps, nothing to convert)."""


@dataclass
class Frame:
    """One input frame: its name (file name or video frame index) and either file bytes or decoded BGR."""

    name: str
    path: Path | None = None
    bgr: np.ndarray | None = None


class MediaSource:
    """The frames of an image folder or a video file, read lazily (an hour of video never sits in memory)."""

    def __init__(self, path: Path) -> None:
        import cv2

        self.path = path
        self.files: list[Path] = []
        self.video_fps: float | None = None
        self.count: int | None = None
        if path.is_dir():
            self.files = sorted((f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS),
                                key=lambda f: f.name)
            if not self.files:
                raise MediaError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
            self.count = len(self.files)
        elif path.is_file():
            cap = cv2.VideoCapture(str(path))
            ok = cap.isOpened()
            fps = cap.get(cv2.CAP_PROP_FPS) if ok else 0.0
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
            cap.release()
            if not ok:
                raise MediaError(f"{path}: not an image folder, and OpenCV cannot open it as a video")
            self.video_fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
            self.count = frames if frames > 0 else None
        else:
            raise MediaError(f"{path}: no such file or folder")

    @property
    def is_video(self) -> bool:
        return not self.files

    def frames(self) -> Iterator[Frame]:
        if not self.is_video:
            for f in self.files:
                yield Frame(f.name, path=f)
            return
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        try:
            i = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield Frame(f"frame {i}", bgr=bgr)
                i += 1
        finally:
            cap.release()


def open_media(path: str | Path) -> MediaSource:
    return MediaSource(Path(path))


def read_timestamps(path: str | Path, source: MediaSource) -> list[float]:
    """Seconds per frame from a timestamps file (format in the module docstring), in frame order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: cannot read: {exc}") from exc
    rows = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        try:
            seconds = float(parts[-1])
        except ValueError:
            raise MediaError(f"{path}:{n}: the last field must be seconds, got {parts[-1]!r}") from None
        if not np.isfinite(seconds) or len(parts) > 2:
            raise MediaError(f"{path}:{n}: expected '<seconds>' or '<file name> <seconds>', got {text!r}")
        rows.append((parts[0] if len(parts) == 2 else None, seconds, n))
    named = {name is not None for name, _, _ in rows}
    if len(named) > 1:
        raise MediaError(f"{path}: mixes '<seconds>' and '<file name> <seconds>' lines")
    if named == {True}:
        if source.is_video:
            raise MediaError(f"{path}: file names given, but {source.path} is a video")
        by_name = {}
        for name, seconds, n in rows:
            if name in by_name:
                raise MediaError(f"{path}:{n}: {name} listed twice")
            by_name[name] = seconds
        missing = [f.name for f in source.files if f.name not in by_name]
        unknown = sorted(set(by_name) - {f.name for f in source.files})
        if missing or unknown:
            raise MediaError(f"{path}: images without a time {missing[:5]}, times without an image {unknown[:5]}")
        times = [by_name[f.name] for f in source.files]
    else:
        times = [seconds for _, seconds, _ in rows]
        if source.count is not None and len(times) != source.count:
            raise MediaError(f"{path}: {len(times)} times for {source.count} frames")
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            raise MediaError(f"{path}: times must increase strictly (frame {i}: {times[i]} after {times[i - 1]})")
    return times


def _stamps_ns(times: list[float] | None, fps: float | None, start_s: float) -> Iterator[int]:
    """Header stamps in ns: from the timestamps (absolute, or relative to start) or frame i at start + i/fps."""
    if times is not None:
        offset = 0.0 if times and times[0] >= ABSOLUTE_TIME_S else start_s
        for t in times:
            yield round((offset + t) * 1e9)
        return
    assert fps is not None
    i = 0
    while True:
        yield round(start_s * 1e9) + round(i * 1e9 / fps)
        i += 1


def _decode(frame: Frame) -> np.ndarray:
    """rgb8 (H, W, 3) uint8 from a file or a decoded video frame; grey and alpha are converted."""
    import cv2

    bgr = frame.bgr
    if bgr is None:
        assert frame.path is not None
        bgr = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)  # 8-bit 3-channel, whatever the file holds
        if bgr is None:
            raise MediaError(f"{frame.path}: OpenCV cannot decode this image")
    return np.ascontiguousarray(bgr[..., ::-1])


def _compressed(frame: Frame, stamp_ns: int, frame_id: str) -> Any:
    """JPEG/PNG files byte for byte; other stills to PNG, video frames to JPEG."""
    import cv2

    if frame.path is not None and frame.path.suffix.lower() in _PASS_THROUGH:
        payload = frame.path.read_bytes()
        return compressed_msg_from_bytes(payload, _PASS_THROUGH[frame.path.suffix.lower()], stamp_ns, frame_id)
    bgr = np.ascontiguousarray(_decode(frame)[..., ::-1])
    ext, fmt, params = ((".jpg", "jpeg", [cv2.IMWRITE_JPEG_QUALITY, VIDEO_JPEG_QUALITY]) if frame.path is None
                        else (".png", "png", []))
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise MediaError(f"{frame.name}: {fmt} encoding failed")
    return compressed_msg_from_bytes(buf.tobytes(), fmt, stamp_ns, frame_id)


@dataclass(frozen=True)
class BagSummary:
    path: Path
    topic: str
    messages: int
    seconds: float  # stream time of the last message (first message = 0)
    fps: float | None
    questions_path: Path


def write_question_template(bag: Path, topic: str, seconds: float, fps: float | None, source: Path) -> Path:
    """BAG/questions.yaml with the bag info and no questions (it loads as a valid question file)."""
    doc = {"version": FORMAT_VERSION,
           "bag": {"topic": topic, "fps": fps, "seconds": round(seconds, 6), "seed": None, "source": str(source)},
           "questions": []}
    questions_from_dict(doc)  # the template is a valid file
    example = ("# Add questions like this one (time: stream seconds since the first frame, at most the bag's\n"
               "# seconds; see docs/evaluation.md for multiple choice, tags and evidence spans):\n"
               f"#  - id: q1\n#    topic: {topic}\n#    time: {round(seconds, 3)}\n"
               "#    question: What colour was the cup on the table?\n#    answers: [red]\n"
               "#    tags: [colour]\n")
    path = bag / "questions.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True) + example, encoding="utf-8")
    return path


def bag_from_media(input_path: str | Path, out: str | Path, *, fps: float | None = None,
                   topic: str = "/camera/image_raw", compressed: bool = False, storage: str = "mcap",
                   timestamps: str | Path | None = None, start_s: float = DEFAULT_START_S,
                   frame_id: str = "camera", progress: bool = True) -> BagSummary:
    """Convert INPUT into a new bag at `out` plus `out/questions.yaml`; nothing is left behind on error."""
    source = open_media(input_path)
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise MediaError(f"--fps must be > 0, got {fps}")
    if not topic.startswith("/"):
        raise MediaError(f"--topic must be an absolute topic name, got {topic!r}")
    if timestamps is None and not source.is_video and (source.path / TIMESTAMPS_FILE).is_file():
        timestamps = source.path / TIMESTAMPS_FILE
    times = read_timestamps(timestamps, source) if timestamps is not None else None
    rate = fps if fps is not None else source.video_fps
    if times is None and rate is None:
        raise MediaError(f"{source.path}: give --fps (an image folder has no frame rate) or a timestamps file")
    out = Path(out)
    if out.exists():
        raise BagError(f"{out} exists; rosbag2 writes into a new directory")
    stamps = _stamps_ns(times, rate, start_s)
    first: list[int] = []
    last = [0]
    bar = tqdm(total=source.count, desc="frames", unit="frame", file=sys.stderr, disable=not progress)

    def messages() -> Iterator[tuple[int, Any]]:
        for k, frame in enumerate(source.frames()):
            if times is not None and k >= len(times):
                raise MediaError(f"{timestamps}: {len(times)} times, but the video has more frames")
            stamp = next(stamps)
            if not first:
                first.append(stamp)
            last[0] = stamp
            msg = _compressed(frame, stamp, frame_id) if compressed else make_image_msg(_decode(frame), stamp, frame_id)
            bar.update()
            yield stamp, msg

    try:
        count = write_messages(out, messages(), topic=topic, msgtype=COMPRESSED_TYPE if compressed else IMAGE_TYPE,
                               storage=storage)
        if count == 0:
            raise MediaError(f"{source.path}: no frame could be read")
        if times is not None and count != len(times):
            raise MediaError(f"{timestamps}: {len(times)} times for {count} frames")
    except BaseException:
        if out.exists():
            shutil.rmtree(out)  # a half-written bag would look like a short recording
        raise
    finally:
        bar.close()
    seconds = (last[0] - first[0]) * 1e-9
    shown_fps = rate if times is None else (round((count - 1) / seconds, 6) if seconds > 0 else None)
    qpath = write_question_template(out, topic, seconds, shown_fps, source.path)
    return BagSummary(out, topic, count, seconds, shown_fps, qpath)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infinipot-bag-from-media", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", metavar="INPUT", type=Path, help="a folder of images (sorted by name) or a video file")
    p.add_argument("--out", type=Path, required=True, help="new rosbag2 directory")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate for the stamps (default: the video's; required for a folder without a "
                        "timestamps file)")
    p.add_argument("--topic", default="/camera/image_raw")
    p.add_argument("--compressed", action="store_true",
                   help="sensor_msgs/CompressedImage: JPEG/PNG files passed through unchanged")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--timestamps", type=Path, default=None,
                   help=f"timestamps file (default: INPUT/{TIMESTAMPS_FILE} when INPUT is a folder that has one)")
    p.add_argument("--start-time", type=float, default=DEFAULT_START_S,
                   help="header stamp (UNIX seconds) of the first frame when times are relative")
    p.add_argument("--frame-id", default="camera")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        summary = bag_from_media(args.input, args.out, fps=args.fps, topic=args.topic, compressed=args.compressed,
                                 storage=args.storage, timestamps=args.timestamps, start_s=args.start_time,
                                 frame_id=args.frame_id, progress=not args.quiet)
    except (MediaError, BagError) as exc:
        print(f"infinipot-bag-from-media: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infinipot-bag-from-media: interrupted; no bag written", file=sys.stderr)
        return 130
    kind = "CompressedImage" if args.compressed else "Image rgb8"
    print(f"wrote {summary.path} ({args.storage}): {summary.messages} {kind} messages on {summary.topic}, "
          f"{summary.seconds:.2f} s; question template {summary.questions_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
