"""`pmt-bag-record`: subscribe to topics (the node's outputs by default) and write them to a bag.

    pmt-bag-record --out runs/bags/node_out                 # seg + disparity until Ctrl-C
    pmt-bag-record --out OUT --topics seg disparity points2 --storage mcap --duration 30

Messages are written as they arrive (serialized CDR bytes, no deserialization), logged at their
arrival time like rosbag2 does; their header stamps are untouched. Reliable subscriptions with a
deep history (--depth), so a reliable publisher's burst is kept rather than overwritten. A
sqlite3 bag (the default) is written in place and flushed every --flush-interval seconds: even a
recorder killed with SIGKILL leaves a valid bag holding everything up to its last flush. MCAP
and compressed bags can only be complete once closed, so they are written under a hidden name
and appear under --out when closed cleanly (Ctrl-C, SIGTERM, --duration, --max-messages).
Types of the node's outputs are known; other topics' types come from the ROS graph once a
publisher appears.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pmt_perception import topics as names
from pmt_perception.data.bag_io import STORAGES, BagError, DurableSqliteBag, typestore, writing_bag
from pmt_perception.data.ros_messages import DISPARITY_IMAGE, IMAGE
from pmt_perception.ros.bags.layout import message_class
from pmt_perception.ros.shutdown import StopRequest, finish, init_rclpy

__all__ = ["build_parser", "main", "NODE_OUTPUT_TYPES"]

# The node's outputs (docs/node.md): their types are known without asking the graph.
NODE_OUTPUT_TYPES = {
    names.SEG: IMAGE, names.SEG_COLOR: IMAGE, names.DISPARITY: DISPARITY_IMAGE,
    names.POINTS: "sensor_msgs/msg/PointCloud2", names.SEG_CONFIDENCE: IMAGE,
    names.DISPARITY_CONFIDENCE: IMAGE, names.SEG_CLASSES: "std_msgs/msg/String",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-bag-record", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="bag folder to create")
    parser.add_argument("--topics", nargs="+", default=[names.SEG, names.DISPARITY],
                        help="topics to record (relative names follow the namespace)")
    parser.add_argument("--storage", choices=STORAGES, default="sqlite3")
    parser.add_argument("--compression", choices=("none", "file", "message"), default="none")
    parser.add_argument("--depth", type=int, default=100, help="QoS history depth")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (0: until stopped)")
    parser.add_argument("--max-messages", type=int, default=0,
                        help="stop after this many messages in all (0: no limit)")
    parser.add_argument("--type-timeout", type=float, default=30.0,
                        help="seconds to wait for a publisher of a topic of unknown type")
    parser.add_argument("--flush-interval", type=float, default=1.0,
                        help="sqlite3 bags: seconds between flushes to disk; a recorder killed "
                             "hard (SIGKILL) leaves a valid bag up to its last flush")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    parser.add_argument("--json", action="store_true", help="print a summary as JSON")
    return parser


def _resolve_types(node, topics: list[str], timeout: float, stop) -> dict[str, str] | None:
    """Message type per topic: the node's known outputs, else the first type the graph offers;
    None when stopped while waiting."""
    types = {t: NODE_OUTPUT_TYPES[t] for t in topics if t in NODE_OUTPUT_TYPES}
    deadline = time.monotonic() + timeout
    while len(types) < len(topics):
        offered = {name: kinds for name, kinds in node.get_topic_names_and_types()}
        for topic in topics:
            full = node.resolve_topic_name(topic)
            if topic not in types and offered.get(full):
                types[topic] = offered[full][0]
        if len(types) < len(topics):
            if time.monotonic() > deadline:
                missing = [t for t in topics if t not in types]
                raise SystemExit(f"pmt-bag-record: no publisher of {', '.join(missing)} within "
                                 f"{timeout:g} s, so its type is unknown")
            if stop.wait(0.1):
                return None
    return types


def _record(node, writer, types: dict[str, str], counts: dict[str, int], qos, args, stop,
            flush=None) -> None:
    """Write every message of ``types``' topics until a stop, --duration or --max-messages;
    ``flush()`` (when given) every --flush-interval seconds."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    store = typestore()
    connections = {t: writer.add_connection(t, types[t], typestore=store) for t in args.topics}

    def write(topic: str, data: bytes) -> None:
        writer.write(connections[topic], time.time_ns(), data)
        counts[topic] += 1

    subscriptions = [node.create_subscription(message_class(types[t]), t,
                                              lambda data, t=t: write(t, data), qos, raw=True)
                     for t in args.topics]
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    start, announced = time.monotonic(), False
    flushed = start
    try:
        while executor.context.ok() and not stop.requested:
            executor.spin_once(timeout_sec=0.05)
            if flush is not None and time.monotonic() - flushed >= args.flush_interval:
                flush()
                flushed = time.monotonic()
            if not announced and all(s.get_publisher_count() > 0 for s in subscriptions):
                # Tests and scripts wait for this line before they start publishing.
                print(f"recording: {', '.join(args.topics)} matched", file=sys.stderr, flush=True)
                announced = True
            if args.duration and time.monotonic() - start >= args.duration:
                break
            if args.max_messages and sum(counts.values()) >= args.max_messages:
                break
    except ExternalShutdownException:
        pass  # stop recording; the caller's with block closes and publishes the bag
    finally:
        executor.shutdown(timeout_sec=0)


def main(argv: list[str] | None = None) -> int:
    return finish(_run(argv), as_command=argv is None)


def _run(argv) -> int:
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(["pmt-bag-record", *argv])[1:])
    if args.out.exists() and not args.overwrite:
        print(f"pmt-bag-record: bag {args.out} exists already; choose another path or pass "
              f"--overwrite", file=sys.stderr)
        return 2
    with StopRequest() as stop:
        init_rclpy(["pmt-bag-record", *argv])
        node = rclpy.create_node("pmt_bag_record")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.depth,
                         durability=DurabilityPolicy.VOLATILE,
                         reliability=(ReliabilityPolicy.RELIABLE if args.reliability == "reliable"
                                      else ReliabilityPolicy.BEST_EFFORT))
        counts = {topic: 0 for topic in args.topics}
        try:
            types = _resolve_types(node, args.topics, args.type_timeout, stop)
            if types is None:  # stopped before anything was recorded: no bag
                return 0
            if args.storage == "sqlite3" and args.compression == "none":
                # In place, flushed every --flush-interval: a killed recorder leaves a valid bag.
                bag = DurableSqliteBag(args.out, overwrite=args.overwrite)
                try:
                    _record(node, bag, types, counts, qos, args, stop, flush=bag.flush)
                finally:
                    bag.close()
            else:
                with writing_bag(args.out, storage=args.storage, compression=args.compression,
                                 overwrite=args.overwrite) as writer:
                    _record(node, writer, types, counts, qos, args, stop)
        except BagError as error:
            print(f"pmt-bag-record: {error}", file=sys.stderr)
            return 2
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    summary = {"bag": str(args.out), "messages": counts}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"recorded {sum(counts.values())} messages to {args.out}: {counts}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
