"""The PMT network: pure PyTorch, no ROS, no file I/O."""
from .pmt import PMTNet, PMTOutput, build_model, count_parameters, initial_weights, to_channels_last

__all__ = ["PMTNet", "PMTOutput", "build_model", "count_parameters", "initial_weights",
           "to_channels_last"]
