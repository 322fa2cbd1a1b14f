"""Checkpoints the node, the Predictor and pmt-evaluate must refuse, with an error that names the
file and the actual problem (issue 13, defects d, e, f):

  d. a class table that does not match the model's outputs;
  e. a file of random bytes (not "pickled objects that could run code"), an .onnx given to the
     node (it runs PyTorch checkpoints only, and says so);
  f. with autostart, a checkpoint that fails to load makes the node exit non-zero (launch can
     respawn or stop it) instead of idling unconfigured.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pmt_perception.checkpoint import CheckpointError, load_checkpoint

NODE_EXIT_TIMEOUT = 180


@pytest.fixture(scope="module")
def wrong_classes(tiny_checkpoint, tmp_path_factory):
    """The tiny model (8 outputs) with a 3-class table, written like any checkpoint."""
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["class_names"] = ["ground", "obstacle", "sky"]
    payload["palette"] = payload["palette"][:3]
    path = tmp_path_factory.mktemp("bad") / "three_classes.pt"
    torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def random_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "random.pt"
    path.write_bytes(b"\x13\x37" + os.urandom(4094))   # neither a zip nor a pickle
    return path


def test_class_table_must_match_the_model_outputs(wrong_classes):
    from pmt_perception.inference import Predictor

    with pytest.raises(CheckpointError, match=r"3 class names .* 8 outputs"):
        load_checkpoint(wrong_classes)
    with pytest.raises(CheckpointError, match=str(wrong_classes)):
        Predictor(wrong_classes, device="cpu")


def test_pmt_evaluate_refuses_a_wrong_class_table_with_exit_2(wrong_classes, tmp_path, capsys):
    from pmt_perception import evaluate

    code = evaluate.main(["--checkpoint", str(wrong_classes), "--data", "synthetic",
                          "--limit", "1", "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert code == 2
    error = capsys.readouterr().err
    assert str(wrong_classes) in error and "8 outputs" in error


def test_random_bytes_are_not_called_pickled_code(random_bytes):
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(random_bytes)
    message = str(caught.value)
    assert str(random_bytes) in message and "not a PyTorch checkpoint" in message
    assert "pickled" not in message


def test_a_pickle_with_objects_is_still_refused_as_such(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"format": "pmt_perception/1", "thing": Path("/")}, path)   # a pickled object
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)


def run_node(ros_graph_factory, domain_id: int, checkpoint) -> tuple[int, str]:
    graph = ros_graph_factory(domain_id)
    process = graph.start("node", "pmt_perception.ros.node",
                          params={"checkpoint": str(checkpoint), "device": "cpu"})
    code = process.wait(timeout=NODE_EXIT_TIMEOUT)
    graph.processes.pop("node")
    return code, graph.log("node")


@pytest.mark.ros
def test_node_with_autostart_exits_non_zero_on_a_bad_checkpoint(ros_graph_factory,
                                                                 wrong_classes, random_bytes,
                                                                 tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not really onnx")
    for domain_id, checkpoint, says in ((77, wrong_classes, "8 outputs"),
                                        (78, random_bytes, "not a PyTorch checkpoint"),
                                        (79, onnx, "ONNX")):
        code, log = run_node(ros_graph_factory, domain_id, checkpoint)
        assert code == 1, log
        assert str(checkpoint) in log and says in log, log
        assert "Traceback" not in log and "autostart failed" in log
