# Fresh-machine entry points. `make demo` and `make test` create .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SHELL  := /bin/bash

# The ROS-facing tests that take another path when the real ROS 2 tools (launch, ros2 CLI,
# message_filters, sensor_msgs_py) are absent; `make test-without-ros2-tools` runs them so.
ROS_TOOL_TESTS ?= test/test_sync.py test/test_launch.py test/test_bag_io.py test/test_node_units.py \
                  test/test_node_outputs.py test/test_ros_conversions.py test/test_ros_launch.py \
                  test/test_shutdown.py

.PHONY: demo test test-fast test-without-ros2-tools lint venv clean help

help:
	@echo "make demo   - run the main job on the built-in default (creates .venv on first use)"
	@echo "make test   - run the whole test suite (creates .venv on first use)"
	@echo "make lint   - ruff (ruff.toml: pycodestyle, pyflakes, import order, bugbear) on the whole tree"
	@echo "make venv   - only create/update the virtual environment (+ ../shared/ros2_python's ROS 2 tools)"
	@echo "make test-without-ros2-tools - the ROS-facing tests as on a machine without those tools"

venv:
	@scripts/setup_venv.sh

demo: venv
	$(PY) -m pmt_perception.demo

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

test-without-ros2-tools: venv
	scripts/without_ros2_tools.sh $(PY) -m pytest -q -m "not slow" $(ROS_TOOL_TESTS)

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build install log .pytest_cache
