#!/usr/bin/env bash
# Run a command as on a machine without the pure-Python ROS 2 tools (no launch, launch_ros,
# ros2 CLI, message_filters, sensor_msgs_py, rosidl_runtime_py), although .venv has them:
#   scripts/without_ros2_tools.sh .venv/bin/python -m pytest -q test/test_sync.py
# A folder of same-named packages that raise ModuleNotFoundError goes first on PYTHONPATH, so this
# process and every Python child it starts see them as absent (the rclpy / message wheels stay).
# CI runs the ROS-facing tests a second time this way: the package's own fallbacks must not rot.
set -euo pipefail
hidden=$(mktemp -d -t pmt_no_ros2_tools.XXXXXX)
trap 'rm -rf "$hidden"' EXIT
for name in launch launch_ros launch_xml launch_yaml ros2cli ros2launch ros2run ros2pkg ros2topic \
            ros2node ros2param ros2lifecycle ros2service ros2interface message_filters \
            sensor_msgs_py rosidl_runtime_py; do
  mkdir "$hidden/$name"
  echo "raise ModuleNotFoundError('$name is hidden by scripts/without_ros2_tools.sh', name='$name')" \
    > "$hidden/$name/__init__.py"
done
export PMT_WITHOUT_ROS2_TOOLS=1
export PYTHONPATH="$hidden${PYTHONPATH:+:$PYTHONPATH}"
"$@"
