"""launch/stereo_seg.launch.py, checked statically (no launch needed): every parameter it can
pass exists in the node's declarations, every topic it remaps is one of the node's, and it holds
no default values. The real `ros2 launch` of the colcon-built package, with the ros2 CLI against
it, is test_ros_launch.py; every process it starts stopping cleanly is test_shutdown.py.
"""
import ast
from pathlib import Path

from pmt_perception import topics
from pmt_perception.config import config_dir
from pmt_perception.ros.node import INPUT_TOPICS
from pmt_perception.ros.outputs import OUTPUT_TOPICS
from pmt_perception.ros.params import PARAMETER_SPECS, load_defaults

LAUNCH_FILE = Path(__file__).resolve().parent.parent / "launch" / "stereo_seg.launch.py"
NODE_TOPICS = {*(topic for topic, _type in INPUT_TOPICS), *OUTPUT_TOPICS}
BUILTIN_PARAMETERS = {"use_sim_time"}   # declared by rclpy itself on every node
REQUIRED_ARGUMENTS = {"config", "checkpoint", "device", "precision", "namespace", "use_sim_time",
                      "start_source", "left_image", "right_image", "left_info", "right_info"}


def module_constant(tree, name):
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in statement.targets):
            return statement.value
    raise AssertionError(f"{name} not found in {LAUNCH_FILE.name}")


def literal(tree, name):
    """A constant of the launch file: literals, and names taken from pmt_perception.topics
    (where topic names are defined once)."""
    expression = ast.Expression(module_constant(tree, name))
    return eval(compile(expression, str(LAUNCH_FILE), "eval"),  # noqa: S307 - our own file
                {"__builtins__": {}, "topics": topics})


def test_launch_file_passes_only_declared_parameters_and_known_topics():
    tree = ast.parse(LAUNCH_FILE.read_text())
    parameters = literal(tree, "NODE_PARAMETER_ARGUMENTS")
    assert set(parameters.values()) <= set(PARAMETER_SPECS) | BUILTIN_PARAMETERS
    assert set(literal(tree, "REMAP_ARGUMENTS").values()) <= NODE_TOPICS
    argument_names = {key.value for key in module_constant(tree, "ARGUMENTS").keys
                      if isinstance(key, ast.Constant)}
    assert REQUIRED_ARGUMENTS <= argument_names | set(literal(tree, "REMAP_ARGUMENTS"))
    # Defaults live in the YAML: the only literal default in the file is start_source's.
    defaults = {node.value for call in ast.walk(tree) if isinstance(call, ast.Call)
                for kw in call.keywords if kw.arg == "default_value"
                for node in ast.walk(kw.value) if isinstance(node, ast.Constant)}
    assert defaults <= {"", "false", "start_source"}


def test_the_yaml_the_launch_file_passes_matches_the_node_declarations():
    assert set(load_defaults(config_dir() / "stereo_seg.yaml")) == set(PARAMETER_SPECS)
