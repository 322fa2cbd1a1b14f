"""CPU inference benchmark: every PMT variant on every runtime (backend x precision), the
classical and two-network baselines, side by side in ONE run, batch 1.

    .venv/bin/python bench/inference.py --quick                       # 480x720 only (~15 min on 2 cores)
    .venv/bin/python bench/inference.py                               # + compile, other sizes, DeepLabV3
    .venv/bin/python bench/inference.py --quick --markdown bench/RESULTS.md   # also append the table
    .venv/bin/python bench/inference.py --only edge/                  # substring filter on the row name

Rows: each variant in config/model/ (paper, fast, fast_mobile, edge once it exists) on eager fp32,
eager bf16 and openvino bf16 (only where the CPU has native bf16: avx512_bf16 / AMX; emulated
bf16 is slower than fp32 and is skipped), onnxruntime fp32, openvino fp32, openvino int8 (where
NNCF is installed: `pmt-export --int8`'s recipe, calibrated on 8 generated scenes; the
two-network row gets the same, nothing kept in float), and (full run) torch.compile at the auto
precision; the row `auto` resolves to is marked. Baselines: OpenCV
StereoSGBM (stereo_image_proc defaults, and tuned) and the two-network alternative, torchvision
LR-ASPP MobileNetV3-Large + tuned SGBM, on the same runtimes (random weights: speed only).

Each row runs in a fresh subprocess, so its peak RSS (getrusage maxrss) is its own. Times are
the median of N calls after one warm-up call, through `Predictor.predict` (uint8 in, labels +
disparity out: pre/post-processing included); "model s" is the forward alone; "setup s" is
building the runtime (ONNX export, graph compilation) plus the first call. GFLOP: pmt-info's
count on the meta device. The machine's load average before and after is recorded: numbers
from a busy machine are indicative only.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pmt_perception.config import load_model_config  # noqa: E402  (after the path insert)
from pmt_perception.export import export_onnx_bytes  # noqa: E402
from pmt_perception.inference import Predictor  # noqa: E402
from pmt_perception.info import count_gflops  # noqa: E402
from pmt_perception.network import build_model  # noqa: E402
from pmt_perception.network.batchnorm_folding import fold_batchnorm  # noqa: E402
from pmt_perception.openvino_graph import argmax_in_graph, u8_image_inputs  # noqa: E402
from pmt_perception.quantize import DEFAULT_KEEP_FLOAT, calibration_pairs, quantize_onnx  # noqa: E402
from pmt_perception.runtime import backend_available, cpu_flags, cpu_has_native_bf16, resolve_runtime  # noqa: E402

VARIANTS = ("paper", "fast", "fast_mobile", "edge")   # those with a config/model/*.yaml run
MAIN_SIZE = (480, 720)
# Full run only: the resolution / frame-rate trade-off of the auto runtime (docs/performance.md).
EXTRA_SIZES = ((256, 512), (360, 640), (720, 1280))
TWO_NETS = "lraspp_mobilenet_v3_large+sgbm"


def available_variants() -> list[str]:
    return [v for v in VARIANTS if (ROOT / "config" / "model" / f"{v}.yaml").is_file()]


def runtimes(native_bf16: bool, *, quick: bool, int8: bool = False) -> list[tuple[str, str]]:
    """(backend, precision) pairs worth timing on this CPU."""
    rows = [("eager", "fp32")]
    if native_bf16:
        rows.append(("eager", "bf16"))
    rows += [("onnxruntime", "fp32"), ("openvino", "fp32")]
    if int8:
        rows.append(("openvino", "int8"))   # pmt-export --int8's recipe, on both sides
    if native_bf16:
        rows.append(("openvino", "bf16"))
    if not quick:
        rows.append(("compile", "bf16" if native_bf16 else "fp32"))
    return rows


def plan(*, quick: bool, native_bf16: bool, installed: set[str]) -> list[dict]:
    """Every row of one run: dicts with kind, variant, backend, precision, size, repeats."""
    usable = [(b, p) for b, p in runtimes(native_bf16, quick=quick, int8="nncf" in installed)
              if b in ("eager", "compile") or b in installed]
    rows = []
    for variant in available_variants():
        repeats = 2 if variant == "paper" else (3 if quick else 5)
        for backend, precision in usable:
            rows.append(dict(kind="pmt", variant=variant, backend=backend, precision=precision,
                             size=MAIN_SIZE, repeats=repeats))
    for setting in ("stereo_image_proc", "tuned"):
        rows.append(dict(kind="sgbm", variant=setting, backend="opencv", precision="-",
                         size=MAIN_SIZE, repeats=5))
    for backend, precision in usable:
        if backend != "compile":
            rows.append(dict(kind="two_nets", variant=TWO_NETS, backend=backend,
                             precision=precision, size=MAIN_SIZE, repeats=5))
    if not quick:
        rows.append(dict(kind="two_nets", variant="deeplabv3_resnet50+sgbm", backend="eager",
                         precision="bf16" if native_bf16 else "fp32", size=MAIN_SIZE, repeats=3))
        for variant in available_variants():
            if variant != "paper":
                for size in EXTRA_SIZES:
                    rows.append(dict(kind="pmt", variant=variant, backend="auto", precision="auto",
                                     size=size, repeats=3))
    return rows


def row_name(row: dict) -> str:
    return f"{row['kind']}/{row['variant']}/{row['backend']}/{row['precision']}"


# ----------------------------------------------------------------------------- one row (child)
def stereo_pair(size):
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    return left, np.roll(left, -16, axis=1)


def time_calls(call, repeats, warmup=1):
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_pmt(variant, backend, precision, size, repeats):

    torch.manual_seed(0)
    config = load_model_config(variant)
    model = build_model(config).eval()
    left, right = stereo_pair(size)
    start = time.perf_counter()
    if precision == "int8":  # setup includes the calibration (8 generated scenes)
        path = int8_file(model, size)
        predictor = Predictor(path, device="cpu", backend=backend)
        os.unlink(path)  # the runtime holds the graph in memory
    else:
        predictor = Predictor(model, device="cpu", backend=backend, precision=precision)
    del model
    predictor.predict(left, right)
    setup = time.perf_counter() - start
    timings = []
    total = time_calls(lambda: timings.append(predictor.predict(left, right).timings), repeats, 0)
    model_s = statistics.median(t["model"] for t in timings)
    overhead = statistics.median(t["pre"] + t["post"] for t in timings)
    gflop = count_gflops(config, size)["total"]
    return {"seconds": total, "model_seconds": model_s, "overhead_seconds": overhead,
            "gflop": gflop, "gflops_per_s": gflop / model_s, "setup_seconds": setup,
            "runtime": predictor.describe()}


def int8_file(model, size) -> str:
    """`model` quantised as `pmt-export --int8` does (default keep-float), in a temp file."""
    data = quantize_onnx(export_onnx_bytes(fold_batchnorm(model)[0]), calibration_pairs(None, 8, size),
                         description={"bench": True}, keep_float=DEFAULT_KEEP_FLOAT)
    handle = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False)
    handle.write(data)
    handle.close()
    return handle.name


def sgbm_matcher(setting):
    if setting == "stereo_image_proc":
        # stereo_image_proc's SGBM defaults: window 15, 64 disparities, uniqueness 15,
        # speckle 100/4, P1=200, P2=400, disp12MaxDiff 0, prefilter cap 31.
        return cv2.StereoSGBM_create(minDisparity=0, numDisparities=64, blockSize=15, P1=200,
                                     P2=400, disp12MaxDiff=0, preFilterCap=31, uniquenessRatio=15,
                                     speckleWindowSize=100, speckleRange=4)
    # Tuned for 480x720 scenes with up to ~128 px disparity.
    return cv2.StereoSGBM_create(minDisparity=0, numDisparities=128, blockSize=5, P1=8 * 3 * 25,
                                 P2=32 * 3 * 25, disp12MaxDiff=1, preFilterCap=63,
                                 uniquenessRatio=10, speckleWindowSize=100, speckleRange=2,
                                 mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)


def run_sgbm(setting, size, repeats):
    left, right = stereo_pair(size)
    grey = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in (left, right)]
    matcher = sgbm_matcher(setting)
    seconds = time_calls(lambda: matcher.compute(*grey), repeats)
    return {"seconds": seconds, "model_seconds": seconds}


class SegmentationOnly(torch.nn.Module):
    """torchvision segmentation net -> its `out` logits (exporters want tensors)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, image):
        return self.net(image)["out"]


def labels_of(logits: torch.Tensor) -> torch.Tensor:
    """1 x C x H x W logits -> H x W labels (max(0): as the Predictor, faster than argmax)."""
    return logits[0].max(0).indices


def as_float_batch(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float in [0, 1], as the Predictor's general path."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255).unsqueeze(0)


def segmenter(net, backend, precision, size):
    """A callable image (H x W x 3 uint8) -> H x W uint8 labels (argmax of the logits) on
    `backend`, with the same pre/post work as the Predictor's on that backend."""
    wrapped = SegmentationOnly(net).eval()
    if backend == "eager":
        wrapped = wrapped.to(memory_format=torch.channels_last)

        def call(image):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                        enabled=precision == "bf16"):
                batch = as_float_batch(image).contiguous(memory_format=torch.channels_last)
                return labels_of(wrapped(batch).float()).numpy().astype(np.uint8)
        return call
    buffer = io.BytesIO()
    torch.onnx.export(wrapped, (torch.rand(1, 3, *size),), buffer, input_names=["image"],
                      output_names=["out"], opset_version=17, dynamo=False)
    if precision == "int8":  # the same NNCF recipe as ours, nothing kept in float
        images = [{"image": feed["left"]} for feed in calibration_pairs(None, 8, size)]
        buffer = io.BytesIO(quantize_onnx(buffer.getvalue(), images, description={"bench": True}))
    if backend == "onnxruntime":
        import onnxruntime as ort  # optional dependency seam
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(buffer.getvalue(), sess_options=options,
                                       providers=["CPUExecutionProvider"])
        return lambda image: labels_of(torch.from_numpy(session.run(
            None, {"image": as_float_batch(image).numpy()})[0])).numpy().astype(np.uint8)
    import openvino as ov  # optional dependency seam
    core = ov.Core()
    # The argmax and the uint8 input inside the graph, as the Predictor's lean OpenVINO graph
    # does for PMT.
    network = argmax_in_graph(core.read_model(io.BytesIO(buffer.getvalue())), "out", "labels", drop=("out",))
    network = u8_image_inputs(network, ("image",))
    compiled = core.compile_model(network, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()  # (an int8 graph runs int8 under the f32 hint)
    return lambda image: request.infer({"image": image[None]})[0][0, 0].astype(np.uint8)


def run_two_nets(name, backend, precision, size, repeats):

    net = torchvision.models.get_model(name.split("+")[0], weights=None, weights_backbone=None,
                                       num_classes=19).eval()
    left, right = stereo_pair(size)
    grey = [cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in (left, right)]
    matcher = sgbm_matcher("tuned")
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(torch.zeros(1, 3, *size))
    start = time.perf_counter()
    run = segmenter(net, backend, precision, size)

    def segment():
        return run(left)
    segment()
    setup = time.perf_counter() - start
    seg_s = time_calls(segment, repeats, 0)
    sgbm_s = time_calls(lambda: matcher.compute(*grey), repeats)
    gflop = counter.get_total_flops() / 1e9
    return {"seconds": seg_s + sgbm_s, "model_seconds": seg_s, "gflop": gflop,
            "gflops_per_s": gflop / seg_s, "sgbm_seconds": sgbm_s, "setup_seconds": setup,
            "runtime": f"{backend} {precision}"}


def run_row_in_fresh_process(row: dict, timeout: float | None = None) -> dict:
    """`run_row(row)` in a fresh process (`--one`), its result dict. Every benchmark runs rows
    this way: rows measured in one process disturbed each other (the runtimes' worker threads
    outlive their models), and each row's peak RSS is its own. Raises TimeoutExpired, or
    CalledProcessError (with the row's stderr) when the row fails."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(row)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_row(row: dict) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    size = tuple(row["size"])
    if row["kind"] == "pmt":
        result = run_pmt(row["variant"], row["backend"], row["precision"], size, row["repeats"])
    elif row["kind"] == "sgbm":
        result = run_sgbm(row["variant"], size, row["repeats"])
    else:
        result = run_two_nets(row["variant"], row["backend"], row["precision"], size, row["repeats"])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


# ----------------------------------------------------------------------------- report (parent)
def machine() -> dict:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    bf16 = ", ".join(sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16"))) or "no native bf16"
    versions = {}
    for module in ("torch", "onnxruntime", "openvino"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "not installed"
    return {"cpu": name, "cores": os.cpu_count(), "isa": isa, "bf16": bf16,
            "native_bf16": cpu_has_native_bf16(), "versions": versions}


def fmt(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def markdown_table(rows, *, command, info, load_before, load_after, auto):
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [f"### CPU inference, all variants x runtimes ({datetime.date.today()})", "",
             f"Command: `{command}`  ",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['isa']}, {info['bf16']}, no GPU; "
             f"{versions}.  ",
             f"Load average (1 min) before / after: {load_before:.1f} / {load_after:.1f}"
             f"{' (busy machine: indicative only)' if max(load_before, load_after) > 1.5 else ''}.  ",
             f"`auto` on this machine: {auto[0]} {auto[1]} (marked *). Batch 1, one stereo pair; "
             "median of N after one warm-up.", "",
             "| model | variant | backend | precision | size | s/frame | model s | overhead | "
             "setup s | GFLOP | GFLOP/s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["result"]
        overhead = r.get("overhead_seconds")
        overhead_pct = f"{100 * overhead / r['model_seconds']:.1f} %" if overhead is not None else "-"
        mark = " *" if (row["kind"], row["backend"], row["precision"]) == ("pmt", *auto) else ""
        lines.append(f"| {row['kind']} | {row['variant']} | {row['backend']}{mark} | "
                     f"{row['precision']} | {row['size'][0]}x{row['size'][1]} | "
                     f"{fmt(r.get('seconds'), '.3f')} | {fmt(r.get('model_seconds'), '.3f')} | "
                     f"{overhead_pct} | {fmt(r.get('setup_seconds'), '.1f')} | "
                     f"{fmt(r.get('gflop'), '.1f')} | {fmt(r.get('gflops_per_s'), '.0f')} | "
                     f"{fmt(r.get('peak_rss_mb'), '.0f')} |")
    return "\n".join(lines) + "\n"


def summary(rows) -> list[str]:
    """The issue's comparisons, from this run's rows at 480x720."""
    main = [r for r in rows if tuple(r["size"]) == MAIN_SIZE]

    def best(predicate):
        candidates = [r for r in main if predicate(r)]
        return min(candidates, key=lambda r: r["result"]["seconds"]) if candidates else None

    def label(r):
        return f"{r['variant']} {r['backend']} {r['precision']} {r['result']['seconds']:.3f} s/frame"

    lines = []
    for variant in available_variants():
        row = best(lambda r, v=variant: r["kind"] == "pmt" and r["variant"] == v)
        if row:
            lines.append(f"best {variant}: {row['backend']} {row['precision']} "
                         f"{row['result']['seconds']:.3f} s/frame ({1 / row['result']['seconds']:.1f} Hz)")
    two = best(lambda r: r["kind"] == "two_nets" and r["variant"] == TWO_NETS)
    edge = best(lambda r: r["kind"] == "pmt" and r["variant"] == "edge")
    mobile_bf16 = best(lambda r: r["variant"] == "fast_mobile" and r["backend"] == "eager"
                       and r["precision"] == "bf16")
    mobile = best(lambda r: r["kind"] == "pmt" and r["variant"] == "fast_mobile")
    if two:
        lines.append(f"two-network alternative (best runtime): {label(two)}")
    if edge and two:
        ratio = edge["result"]["seconds"] / two["result"]["seconds"]
        lines.append(f"edge / two-network = {ratio:.2f} (target <= 0.80): "
                     f"{'met' if ratio <= 0.8 else 'NOT met'}")
    for reference, name in ((mobile_bf16, "fast_mobile eager bf16"), (mobile, "fast_mobile best")):
        if edge and reference:
            speedup = reference["result"]["seconds"] / edge["result"]["seconds"]
            lines.append(f"edge speed-up over {name} = {speedup:.2f}x (target >= 2 vs bf16)")
    if edge:
        lines.append(f"edge best <= 40 ms (goal beyond): {edge['result']['seconds'] <= 0.040}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="480x720 only, no torch.compile / DeepLabV3 rows, fewer repeats")
    parser.add_argument("--only", default=None,
                        help="substring filter on 'kind/variant/backend/precision'; several "
                        "separated by commas keep rows matching any")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    parser.add_argument("--json", default=None, help="write all rows as JSON here")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one row
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_row(json.loads(args.one))))
        return 0
    info = machine()
    installed = {b for b in ("onnxruntime", "openvino") if backend_available(b)}
    if importlib.util.find_spec("nncf") is not None:
        installed.add("nncf")   # the int8 rows
    auto = resolve_runtime("auto", "auto", torch.device("cpu"))
    load_before = os.getloadavg()[0]
    rows = []
    for row in plan(quick=args.quick, native_bf16=info["native_bf16"], installed=installed):
        if args.only and not any(part in row_name(row) for part in args.only.split(",")):
            continue
        try:
            row["result"] = run_row_in_fresh_process(row, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"TIMEOUT {row_name(row)} after {args.timeout:.0f} s", file=sys.stderr)
            continue
        except subprocess.CalledProcessError as failed:
            print(f"FAILED {row_name(row)}:\n{failed.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(row)
        r = row["result"]
        print(f"{row['kind']:8s} {row['variant']:30s} {row['backend']:11s} {row['precision']:5s} "
              f"{row['size'][0]}x{row['size'][1]:<5d} {r['seconds']:.3f} s/frame (model "
              f"{r['model_seconds']:.3f} s, setup {r.get('setup_seconds', 0):.1f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB)", flush=True)
    command = "python bench/inference.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown_table(rows, command=command, info=info, load_before=load_before,
                           load_after=os.getloadavg()[0], auto=auto)
    notes = summary(rows)
    print(table)
    print("\n".join(notes))
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as handle:
            handle.write("\n" + table + "\n" + "\n".join(f"- {line}" for line in notes) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "auto": auto, "rows": rows},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
