"""The node's parameters: descriptions and limits here, default values in config/stereo_seg.yaml.

Defaults live once (DESIGN §6): this module never holds a default value. It reads them from the
shipped YAML and declares every parameter with a ParameterDescriptor (description, range or
allowed values, whether a change applies at once). The tables in docs/node.md are written
from the same specs by ``python -m pmt_perception.ros.param_docs`` (test_node_units checks
that the page is current). A parameter present in the code but missing from the YAML (or the reverse) is
an error at startup, so the two cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from pmt_perception.config import config_dir, load_yaml

__all__ = ["ParameterSpec", "PARAMETER_SPECS", "default_parameters_file", "load_defaults",
           "declare_parameters", "check_value", "settings_snapshot", "help_requested",
           "help_text"]

RELIABILITIES = ("best_effort", "reliable", "system_default")


@dataclass(frozen=True)
class ParameterSpec:
    description: str
    applies: str = "on configure"        # "at once" | "on configure" | "on activate"
    choices: tuple[str, ...] = ()
    minimum: float | None = None         # inclusive bounds (ranges in the descriptor)
    maximum: float | None = None

    @property
    def dynamic(self) -> bool:
        return self.applies == "at once"


_S = ParameterSpec
PARAMETER_SPECS: dict[str, ParameterSpec] = {
    "autostart": _S("Configure and activate at startup (a plain launch just works); false "
                    "waits for lifecycle transitions.", applies="at startup"),
    "checkpoint": _S("Checkpoint file (.pt). Empty: the first models/*.pt shipped with the "
                     "package, else an untrained network (with a warning)."),
    "untrained_variant": _S("Model config (config/model/<name>.yaml or a path) of the untrained "
                            "network built when no checkpoint exists."),
    "untrained_seed": _S("torch seed for that untrained network.", minimum=0),
    "device": _S("Torch device: auto (cuda when available), cpu, cuda, cuda:N."),
    "precision": _S("Inference precision; auto: bf16 on CPUs with avx512_bf16/AMX, fp16 on "
                    "CUDA, else fp32 (fp16 needs a GPU).", choices=("auto", "fp32", "bf16", "fp16")),
    "backend": _S("Inference runtime; auto: the fastest installed for device and precision "
                  "(docs/performance.md).",
                  choices=("auto", "eager", "compile", "onnxruntime", "openvino")),
    "channels_last": _S("Run the model in channels-last memory format."),
    "inference_scale": _S("The network runs on each pair resized by this factor (sides "
                          "rounded to multiples of 32); outputs come back at the input's size, "
                          "disparity in its pixels. < 1 trades detail for frame rate "
                          "(docs/performance.md).", minimum=0.1, maximum=4.0),
    "parallel_frames": _S("Frames the model runs at once, each on its share of the CPU threads "
                          "(OpenVINO streams; other backends run one at a time). 2: more frames/s "
                          "when input outpaces the model on a CPU, each frame slower; 1: the "
                          "lowest latency a frame (docs/performance.md).", minimum=1, maximum=64),
    "compile": _S("torch.compile the model (slow first frame, faster after)."),
    "warmup_size": _S("[H, W] of dummy frames run on configure; 0 skips the warm-up."),
    "approximate_sync": _S("Pair inputs whose stamps differ by up to sync_slop instead of "
                           "requiring identical stamps.", applies="on activate"),
    "sync_slop": _S("Largest stamp spread of an approximately synchronized set, seconds.",
                    applies="on activate", minimum=0.0, maximum=10.0),
    "sync_queue_size": _S("Messages kept per input while pairing.", applies="on activate",
                          minimum=1, maximum=1000),
    "input_reliability": _S("QoS reliability of the four input subscriptions.",
                            applies="on activate", choices=RELIABILITIES),
    "input_depth": _S("QoS history depth of the input subscriptions.", applies="on activate",
                      minimum=1, maximum=1000),
    "output_reliability": _S("QoS reliability of the output publishers.",
                             choices=RELIABILITIES),
    "output_depth": _S("QoS history depth of the output publishers.", minimum=1, maximum=1000),
    "publish_seg": _S("Publish seg (mono8 class ids, 255 = unlabeled).", applies="at once"),
    "publish_seg_color": _S("Publish seg_color (rgb8 palette image).", applies="at once"),
    "publish_disparity": _S("Publish disparity (stereo_msgs/DisparityImage).", applies="at once"),
    "publish_points": _S("Publish points2 (organized PointCloud2).", applies="at once"),
    "publish_confidence": _S("Publish seg_confidence and disparity_confidence (32FC1).",
                             applies="at once"),
    "min_disparity": _S("DisparityImage.min_disparity, pixels in message units (adjusted for "
                        "cx_l - cx_r); smaller values mean invalid.", applies="at once"),
    "max_disparity": _S("DisparityImage.max_disparity, pixels in message units.",
                        applies="at once"),
    "points_stride": _S("Every n-th row and column of the image becomes a point.",
                        applies="at once", minimum=1, maximum=64),
    "points_min_depth": _S("Points nearer than this (m) are NaN.", applies="at once",
                           minimum=0.0, maximum=1e6),
    "points_max_depth": _S("Points farther than this (m) are NaN.", applies="at once",
                           minimum=0.0, maximum=1e9),
    "points_labels": _S("Add the UINT32 label field to points2.", applies="at once"),
    "diagnostics_period": _S("Seconds between /diagnostics messages.", applies="at startup",
                             minimum=0.1,
                             maximum=3600.0),
    "warning_throttle": _S("Seconds between two warnings about the same kind of bad input.",
                           applies="at once", minimum=0.0, maximum=3600.0),
    "sync_stall_timeout": _S("Seconds of input without a synchronized set before a warning "
                             "names the input that lags.", applies="at once", minimum=0.1,
                             maximum=3600.0),
    "adapt": _S("Online self-supervised adaptation (docs/adapt.md): a background thread adapts "
                "a copy of the model to the incoming pairs and swaps its weights in between "
                "frames; never delays the outputs. /diagnostics then shows adapt_steps, "
                "adapt_loss, adapt_discarded_steps (non-finite or exploding loss), adapt_swaps.",
                applies="on activate"),
    "adapt_every_n": _S("Every n-th synchronized pair goes to the adaptation thread (one-slot "
                        "mailbox: a newer pair replaces an unused one).",
                        applies="on activate", minimum=1, maximum=10000),
    "adapt_steps_per_pair": _S("Adaptation updates made on each pair taken (each on its own "
                               "random crop): the pair's teacher pass, SGBM proxy and occlusion "
                               "mask are computed once and shared by them.",
                               applies="on activate", minimum=1, maximum=100),
    "adapt_swap_interval": _S("Least seconds between two weight swaps into the predictor.",
                              applies="on activate", minimum=0.0, maximum=86400.0),
    "adapt_config": _S("pmt-adapt settings YAML of the online steps (loss weights, parameters, "
                       "crop); empty: config/adapt.yaml.", applies="on activate"),
    "adapt_save_path": _S("Adapted checkpoint written atomically on deactivate and on each "
                          "~/save_adapted request (std_srvs/Trigger service, or an "
                          "std_msgs/Empty on the topic of that name); empty: not saved.",
                          applies="at once"),
}


def default_parameters_file() -> Path:
    return config_dir() / "stereo_seg.yaml"


def load_defaults(path: str | Path | None = None,
                  specs: dict[str, ParameterSpec] | None = None) -> dict[str, Any]:
    """The ``/**: ros__parameters`` mapping of a node's YAML, checked against its specs.

    Defaults: the perception node's file and specs; the stereo source passes its own.
    """
    path = Path(path) if path is not None else default_parameters_file()
    specs = PARAMETER_SPECS if specs is None else specs
    data = load_yaml(path)
    try:
        values = data["/**"]["ros__parameters"]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: expected '/**: ros__parameters:' at the top") from None
    missing = sorted(set(specs) - set(values))
    unknown = sorted(set(values) - set(specs))
    if missing or unknown:
        raise ValueError(f"{path}: parameters out of step with the node's specs: "
                         f"missing {missing}, unknown {unknown}")
    for name, value in values.items():
        problem = check_value(name, value, specs)
        if problem:
            raise ValueError(f"{path}: {problem}")
    return dict(values)


def _descriptor(name: str, spec: ParameterSpec, default: Any) -> ParameterDescriptor:
    constraints = [f"applies {spec.applies}"]
    if spec.choices:
        constraints.append("one of: " + ", ".join(spec.choices))
    descriptor = ParameterDescriptor(name=name, description=spec.description,
                                     additional_constraints="; ".join(constraints))
    if spec.minimum is not None and spec.maximum is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.minimum), to_value=int(spec.maximum), step=0)]
        elif isinstance(default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
    return descriptor


def check_value(name: str, value: Any, specs: dict[str, ParameterSpec] | None = None) -> str | None:
    """Why ``value`` is not acceptable for ``name``, or None when it is."""
    spec = (PARAMETER_SPECS if specs is None else specs).get(name)
    if spec is None:
        return f"unknown parameter {name!r}"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {list(spec.choices)}, got {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            return f"{name} must be >= {spec.minimum}, got {value}"
        if spec.maximum is not None and value > spec.maximum:
            return f"{name} must be <= {spec.maximum}, got {value}"
    if name.endswith("_size") and not isinstance(value, (int, float, str)) and (
            len(value) != 2 or any(v < 0 for v in value)):
        return f"{name} must be [H, W] with H, W >= 0, got {list(value)}"
    return None


def declare_parameters(node, specs: dict[str, ParameterSpec] | None = None,
                       path: str | Path | None = None) -> None:
    """Declare every parameter on ``node`` with its descriptor and the YAML default.

    Values given at startup (``--params-file``, ``-p``, launch) override the defaults through
    rclpy's parameter overrides, as usual. An on-set callback rejects values the specs forbid
    (type changes are already refused by rclpy: each parameter keeps its YAML type).
    """
    specs = PARAMETER_SPECS if specs is None else specs
    defaults = load_defaults(path, specs)
    node.declare_parameters("", [
        (name, defaults[name], _descriptor(name, spec, defaults[name]))
        for name, spec in specs.items()])
    for name in specs:  # startup overrides bypass the on-set callback below
        problem = check_value(name, node.get_parameter(name).value, specs)
        if problem:
            raise ValueError(f"parameter {problem}")

    def reject_bad_values(parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name in specs:
                problem = check_value(parameter.name, parameter.value, specs)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(reject_bad_values)


def settings_snapshot(node, specs: dict[str, ParameterSpec] | None = None) -> dict[str, Any]:
    """The node's own parameters as a plain dict (arrays as lists)."""
    values = {}
    for name in (PARAMETER_SPECS if specs is None else specs):
        value = node.get_parameter(name).value
        if not isinstance(value, (str, bytes, bool, int, float)) and value is not None:
            value = list(value)
        values[name] = value
    return values


def help_requested(argv) -> bool:
    """``-h`` / ``--help`` among the arguments before ``--ros-args``."""
    argv = list(argv or [])
    user_arguments = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    return any(a in ("-h", "--help") for a in user_arguments[1:])


def help_text(usage: str, specs: dict[str, ParameterSpec] | None = None,
              path: str | Path | None = None) -> str:
    """``usage`` followed by every parameter with its default, limits and meaning."""
    specs = PARAMETER_SPECS if specs is None else specs
    defaults = load_defaults(path, specs)
    lines = [usage.rstrip(), "", f"parameters (defaults from {path or default_parameters_file()};"
             " set with --ros-args -p NAME:=VALUE):"]
    for name, spec in specs.items():
        limits = f" one of {', '.join(spec.choices)};" if spec.choices else ""
        lines.append(f"  {name} = {defaults[name]!r}  ({spec.applies};{limits} {spec.description})")
    return "\n".join(lines)
