"""launch/stereo_seg.launch.py: what can be checked without launch_ros, and a real launch with it.

launch and launch_ros are not installable on every machine (DESIGN §5). Without them:
  * the file is parsed with `ast`: every parameter it can pass exists in the node's
    declarations, every topic it remaps is one of the node's, and it holds no default values;
  * it is imported against a tiny stand-in of launch / launch_ros whose classes say they are
    fakes in their names, and its node list is evaluated for a few argument sets.
The real launch test runs only where launch_ros and an installed pmt_perception exist.
"""
import ast
import importlib.util
from pathlib import Path
import sys
import types

import pytest

from pmt_perception.config import config_dir, share_dir
from pmt_perception.ros.outputs import OUTPUT_TOPICS
from pmt_perception.ros.params import PARAMETER_SPECS, load_defaults

LAUNCH_FILE = Path(__file__).resolve().parent.parent / "launch" / "stereo_seg.launch.py"
NODE_TOPICS = {"left/image_rect", "right/image_rect", "left/camera_info", "right/camera_info",
               *OUTPUT_TOPICS}
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
    return ast.literal_eval(module_constant(tree, name))


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


# ----------------------------------------------------------------------------- fake launch
class FakeLaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


class FakeDeclareLaunchArgument:
    def __init__(self, name, default_value=None, description=""):
        self.name, self.default_value, self.description = name, default_value, description


class FakeOpaqueFunction:
    def __init__(self, function):
        self.function = function


class FakeLaunchDescription(list):
    pass


class FakeLaunchRosNode:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def fake_module(name, **members):
    module = types.ModuleType(name, doc=f"FAKE {name} for tests without launch installed")
    module.__dict__.update(members)
    return module


@pytest.fixture
def launch_module(monkeypatch):
    fakes = {
        "launch": fake_module("launch", LaunchDescription=FakeLaunchDescription),
        "launch.actions": fake_module("launch.actions", DeclareLaunchArgument=FakeDeclareLaunchArgument,
                                      OpaqueFunction=FakeOpaqueFunction),
        "launch.substitutions": fake_module("launch.substitutions",
                                            LaunchConfiguration=FakeLaunchConfiguration),
        "launch_ros": fake_module("launch_ros"),
        "launch_ros.actions": fake_module("launch_ros.actions", Node=FakeLaunchRosNode),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("stereo_seg_launch_under_fakes", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(launch_module, **arguments):
    description = launch_module.generate_launch_description()
    declared = {a.name: a.default_value for a in description
                if isinstance(a, FakeDeclareLaunchArgument)}
    unknown = set(arguments) - set(declared)
    assert not unknown, f"not launch arguments: {unknown}"
    context = types.SimpleNamespace(launch_configurations={**declared, **arguments})
    opaque = [a for a in description if isinstance(a, FakeOpaqueFunction)]
    assert len(opaque) == 1
    return declared, [node.kwargs for node in opaque[0].function(context)]


def test_plain_launch_starts_the_node_with_the_yaml_only(launch_module):
    declared, nodes = evaluate(launch_module)
    assert REQUIRED_ARGUMENTS <= set(declared)
    assert len(nodes) == 1
    node = nodes[0]
    assert (node["package"], node["executable"]) == ("pmt_perception", "stereo_seg_node")
    config, overrides = node["parameters"]
    assert Path(config) == config_dir() / "stereo_seg.yaml" and Path(config).is_file()
    assert overrides == {} and node["remappings"] == [] and node["namespace"] == ""


def test_arguments_become_parameters_remaps_and_a_source(launch_module):
    _, nodes = evaluate(launch_module, checkpoint="/models/pmt.pt", precision="bf16",
                        use_sim_time="true", namespace="front", start_source="true",
                        left_image="/cam/left/image_rect_color", points_topic="cloud")
    node, source = nodes
    overrides = node["parameters"][1]
    assert overrides == {"checkpoint": "/models/pmt.pt", "precision": "bf16",
                         "use_sim_time": True}
    assert set(overrides) <= set(PARAMETER_SPECS) | BUILTIN_PARAMETERS
    assert ("left/image_rect", "/cam/left/image_rect_color") in node["remappings"]
    assert ("points2", "cloud") in node["remappings"]
    assert source["executable"] == "stereo_source" and source["namespace"] == "front"
    assert source["remappings"] == [("left/image_rect", "/cam/left/image_rect_color")]
    assert Path(source["parameters"][0]).name == "stereo_source.yaml"


# ----------------------------------------------------------------------------- real launch
LAUNCH_SCRIPT = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService()
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]),
    launch_arguments={"start_source": "true", "checkpoint": sys.argv[2]}.items())]))
sys.exit(service.run())
"""


@pytest.mark.ros
@pytest.mark.slow
def test_real_launch_serves_segmentation(request, tmp_path):
    pytest.importorskip("launch_ros", reason="launch_ros is not installed on this machine")
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        get_package_prefix("pmt_perception")
    except PackageNotFoundError:
        pytest.skip("pmt_perception is not installed in an ament index (colcon build)")
    import subprocess

    from sensor_msgs.msg import Image

    from pmt_perception.ros.env import dds_environment
    from pmt_perception.ros.processes import stop_process

    domain_id = 45
    checkpoint = request.getfixturevalue("tiny_checkpoint")
    endpoint = request.getfixturevalue("ros_endpoint_factory")(domain_id)
    endpoint.listen("seg", Image)
    script = tmp_path / "run_launch.py"
    script.write_text(LAUNCH_SCRIPT)
    # The launched processes inherit this environment: shared memory only, domain 45.
    env = dds_environment(domain_id=domain_id, log_dir=tmp_path / "logs")
    launch = subprocess.Popen(
        [sys.executable, str(script), str(share_dir() / "launch" / "stereo_seg.launch.py"),
         str(checkpoint)], env=env, stdout=open(tmp_path / "launch.log", "wb"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        endpoint.wait_for(lambda: endpoint.messages("seg"), 90.0, "seg from the launched node")
    finally:
        stop_process(launch, timeout=20)
