#!/usr/bin/env bash
# Make (or refresh) the project's virtual environment in .venv from requirements.txt.
# Idempotent: a stamp file records the hash of requirements.txt + setup.py, so a second run
# with nothing changed returns in well under a second.
#
# The pure-Python ROS 2 tools that have no PyPI wheel (launch, ros2 CLI, message_filters,
# sensor_msgs_py, colcon; DESIGN.md section 5) are installed from ../shared/ros2_python when that
# folder exists (its install.sh is idempotent too). PMT_ROS2_PYTHON names another copy;
# PMT_ROS2_PYTHON=none skips them (the package then uses its own equivalents).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PMT_VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.pmt_setup_stamp"
want=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
ROS2_PYTHON=${PMT_ROS2_PYTHON:-../shared/ros2_python}

install_ros2_tools() {
  if [ "$ROS2_PYTHON" != none ] && [ -x "$ROS2_PYTHON/install.sh" ]; then
    "$ROS2_PYTHON/install.sh" "$VENV/bin/python"
  fi
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  install_ros2_tools
  exit 0
fi

echo "[setup] creating/updating $VENV (torch with CUDA libs is large: first run takes a few minutes)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
# Editable install: console scripts (pmt-info, ...) land in .venv/bin and the source tree's
# config/ stays the one place defaults live.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
# The ROS 2 wheels' .pth re-executes Python once to set LD_LIBRARY_PATH; check rclpy imports.
"$VENV/bin/python" -c "import rclpy, sensor_msgs.msg, stereo_msgs.msg, torch, torchvision" \
  || { echo "[setup] import check failed" >&2; exit 1; }
echo "$want" > "$STAMP"
install_ros2_tools
echo "[setup] ready: $VENV"
