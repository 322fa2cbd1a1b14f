"""Launch stereo_seg_node (and, optionally, the synthetic stereo_source feeding it).

    ros2 launch pmt_perception stereo_seg.launch.py
    ros2 launch pmt_perception stereo_seg.launch.py start_source:=true
    ros2 launch pmt_perception stereo_seg.launch.py inference_scale:=0.6667   # faster, coarser
    ros2 launch pmt_perception stereo_seg.launch.py parallel_frames:=1   # least latency a frame
    ros2 launch pmt_perception stereo_seg.launch.py namespace:=front checkpoint:=/models/pmt.pt \
        left_image:=/front/left/image_rect_color right_image:=/front/right/image_rect_color

Parameters come from the YAML (`config`, default: the package's config/stereo_seg.yaml). An
argument left empty passes nothing, so the node keeps the YAML's value: defaults live in the
YAML only, never here. Topic names and all parameters: docs/node.md.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from pmt_perception import topics
from pmt_perception.config import config_dir  # the installed share dir (or source tree)

PACKAGE = "pmt_perception"
# launch argument -> node parameter it overrides when not empty
NODE_PARAMETER_ARGUMENTS = {
    "checkpoint": "checkpoint",
    "device": "device",
    "precision": "precision",
    "backend": "backend",
    "inference_scale": "inference_scale",
    "parallel_frames": "parallel_frames",
}
# Node parameters that are numbers: a launch argument is text, and a parameter declared as a
# number refuses a string override.
NUMBER_PARAMETERS = {"inference_scale": float, "parallel_frames": int}
# launch argument -> the node's input / output topic it remaps when not empty
REMAP_ARGUMENTS = {
    "left_image": topics.LEFT_IMAGE,
    "right_image": topics.RIGHT_IMAGE,
    "left_info": topics.LEFT_INFO,
    "right_info": topics.RIGHT_INFO,
    "seg_topic": topics.SEG,
    "seg_color_topic": topics.SEG_COLOR,
    "disparity_topic": topics.DISPARITY,
    "points_topic": topics.POINTS,
}
INPUT_TOPICS = topics.INPUT_TOPICS
ARGUMENTS = {
    "config": "Node parameter file (empty: the package's config/stereo_seg.yaml)",
    "source_config": "stereo_source parameter file (empty: config/stereo_source.yaml)",
    "checkpoint": "Model checkpoint (empty: the YAML's; models/*.pt, else untrained)",
    "device": "Torch device: auto, cpu, cuda, cuda:N (empty: the YAML's)",
    "precision": "fp32, bf16 or fp16 (empty: the YAML's)",
    "backend": "eager, compile, onnxruntime or openvino (empty: the YAML's)",
    "inference_scale": "Run the network on the pair resized by this factor, outputs at the "
                       "input's size, e.g. 0.6667 (empty: the YAML's)",
    "parallel_frames": "Frames in the model at once: 2 more frames/s, 1 least latency a frame "
                       "(empty: the YAML's)",
    "namespace": "Namespace of the nodes and (relative) topics",
    "use_sim_time": "true to follow /clock (empty: ROS's default, false)",
    "start_source": "true to also start the synthetic stereo_source",
    **{name: f"Remap the node's '{topic}' topic (empty: no remap)"
       for name, topic in REMAP_ARGUMENTS.items()},
}


def _is_true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def _config_file(given: str, name: str) -> str:
    if given:
        return given
    return str(config_dir() / name)


def _launch_nodes(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {parameter: NUMBER_PARAMETERS.get(parameter, str)(arg(name))
                 for name, parameter in NODE_PARAMETER_ARGUMENTS.items() if arg(name)}
    time_source = {"use_sim_time": _is_true(arg("use_sim_time"))} if arg("use_sim_time") else {}
    remappings = [(topic, arg(name)) for name, topic in REMAP_ARGUMENTS.items() if arg(name)]
    nodes = [Node(
        package=PACKAGE, executable="stereo_seg_node", name="stereo_seg_node",
        namespace=arg("namespace"), output="screen", emulate_tty=True,
        parameters=[_config_file(arg("config"), "stereo_seg.yaml"), {**overrides, **time_source}],
        remappings=remappings)]
    if _is_true(arg("start_source")):
        nodes.append(Node(
            package=PACKAGE, executable="stereo_source", name="stereo_source",
            namespace=arg("namespace"), output="screen", emulate_tty=True,
            parameters=[_config_file(arg("source_config"), "stereo_source.yaml"), time_source],
            # The source publishes where the node listens, remapped or not.
            remappings=[(topic, target) for topic, target in remappings
                        if topic in INPUT_TOPICS]))
    return nodes


def generate_launch_description():
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value="false" if name == "start_source" else "",
                                description=description)
          for name, description in ARGUMENTS.items()),
        OpaqueFunction(function=_launch_nodes),
    ])
