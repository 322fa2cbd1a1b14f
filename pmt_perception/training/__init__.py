"""Training internals behind `pmt-train` (pmt_perception/train.py): settings (options),
torchrun setup (distributed), resumable sampling (sampling), model/data/optimizer assembly
(components), the loop (trainer), validation, monitoring, and training checkpoints (state).
Nothing is imported here, so `python -m pmt_perception.training.state` runs cleanly."""
