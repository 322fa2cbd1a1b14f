"""`pmt-train` (also `ros2 run pmt_perception train`): train PMT on any dataset of the data package.

    pmt-train --config synthetic --run-dir runs/synth --iterations 2000
    pmt-train --config synthetic --run-dir runs/synth --resume auto          # continue exactly
    torchrun --nproc-per-node 4 -m pmt_perception.train --config cityscapes  # DDP, 1..N nodes

Defaults come from config/train/<name>.yaml (each `extends:` the paper's recipe, paper.yaml,
and states what differs); every TrainConfig key is a flag (`--batch-size 8`, `--lr 1.5e-3`,
`--model-overrides "{backbone: resnet18}"`), flags win, and the resolved settings are written to
<run_dir>/config.yaml (a valid --config for an exact re-run). The run directory gets last.pt
(every checkpoint_interval steps), best.pt (best validation `best_metric`), train_log.jsonl,
val_log.jsonl, tensorboard/ and summary.json. Ctrl-C or SIGTERM stops the run after the step
in flight, writes last.pt and exits 0 (training/interrupt.py); a second signal stops at once.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from pmt_perception.checkpoint import CheckpointError
from pmt_perception.training.components import default_threads
from pmt_perception.training.distributed import setup_distributed, teardown_distributed
from pmt_perception.training.interrupt import StopAtStepBoundary, StoppedAtOnce
from pmt_perception.training.options import resolve_resume_path, resolve_settings
from pmt_perception.training.settings import TrainConfig
from pmt_perception.training.trainer import Trainer


def main(argv: list[str] | None = None) -> int:
    config, resume, source = resolve_settings(argv, prog="pmt-train")
    context = setup_distributed(config.device)
    try:
        with StopAtStepBoundary() as stop_request:
            return train(config, resume, context, config_source=source, stop_request=stop_request)
    except CheckpointError as error:
        # A refused checkpoint is a user error, not a crash: one clear line, exit code 2.
        print(f"pmt-train: {error}", file=sys.stderr, flush=True)
        return 2
    except StoppedAtOnce as stopped:
        print(f"pmt-train: stopped at once ({stopped}); --resume auto continues from the last "
              f"checkpoint in {config.run_dir}", file=sys.stderr, flush=True)
        return 130
    finally:
        teardown_distributed()


def train(config: TrainConfig, resume: str | None, context, *,
          config_source: str | None = None,
          stop_request: StopAtStepBoundary | None = None) -> int:
    if config.threads is not None:
        torch.set_num_threads(default_threads(config))
    resume_path = resolve_resume_path(resume, Path(config.run_dir))
    summary = Trainer(config, context, resume_path=resume_path, config_source=config_source,
                      stop_request=stop_request).run()
    if context.is_main:
        print(json.dumps({k: v for k, v in summary.items() if k != "last_validation"},
                         default=str), flush=True)
        if summary["interrupted_by"]:
            print(f"pmt-train: stopped by {summary['interrupted_by']} after step "
                  f"{summary['steps']}; last.pt written, --resume auto continues the run in "
                  f"{config.run_dir}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
