#!/usr/bin/env python3
"""Rewrite the wheel builder's hard-coded Python paths in the ROS wheels' exported CMake files.

Why: the PyPI ROS 2 wheels (ros-*) export CMake targets that name
`/opt/python/cp311-cp311/include/python3.11` and `/opt/python/cp311-cp311/lib/python3.11/site-packages`,
which exist only on the machine that built the wheels; CMake's generate step fails on them. Pointing them at
this interpreter's include dir and site-packages lets our interfaces build against the venv as a ROS prefix.
Idempotent: files already rewritten are left alone.
"""
from __future__ import annotations

import pathlib
import sys
import sysconfig

BUILDER_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILDER_SITE = "/opt/python/cp311-cp311/lib/python3.11/site-packages"


def main() -> int:
    prefix = pathlib.Path(sys.prefix)
    include = sysconfig.get_paths()["include"]
    site = sysconfig.get_paths()["purelib"]
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        if BUILDER_INCLUDE not in text and BUILDER_SITE not in text:
            continue
        path.write_text(text.replace(BUILDER_INCLUDE, include).replace(BUILDER_SITE, site),
                        errors="surrogateescape")
        changed += 1
    print(f"fix_ros_wheel_cmake: rewrote {changed} file(s) under {prefix / 'share'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
