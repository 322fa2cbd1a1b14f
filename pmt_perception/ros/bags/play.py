"""`pmt-bag-play`: publish a bag's messages with their original timing (no rosbag2 needed).

    pmt-bag-play runs/bags/synth20                          # as recorded
    pmt-bag-play runs/bags/synth20 --rate 0.5 --loop        # half speed, forever
    pmt-bag-play BAG --topics left/image_rect right/image_rect left/camera_info right/camera_info
    pmt-bag-play BAG --clock 100      # also /clock at 100 Hz, for nodes with use_sim_time:=true

Messages go out as the bag stores them (CDR bytes, no deserialization), spaced by their log
times divided by --rate. Before exiting, reliable publishers wait until every subscriber has
acknowledged everything (--tail-timeout), so the last frames are not lost when the process
ends. --wait-for-subscribers holds the start until every selected topic has a subscriber
(a node that is still starting would otherwise miss the first frames). Stamps are unchanged.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pmt_perception.data.bag_io import BagError, bag_topics, read_messages
from pmt_perception.ros.bags.layout import message_class
from pmt_perception.ros.shutdown import StopRequest, finish, init_rclpy

__all__ = ["build_parser", "main", "BagPlayer"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-bag-play", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("bag", type=Path, help="bag folder (sqlite3 or MCAP)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--loop", action="store_true", help="start over at the end, until stopped")
    parser.add_argument("--start-offset", type=float, default=0.0,
                        help="skip this many seconds at the start of the bag")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics")
    parser.add_argument("--clock", type=float, default=0.0, metavar="HZ",
                        help="publish /clock (bag time) at this rate; 0: no /clock")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable",
                        help="QoS of the publishers (reliable also serves best-effort readers)")
    parser.add_argument("--depth", type=int, default=100, help="QoS history depth")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for every topic to have a subscriber")
    parser.add_argument("--tail-timeout", type=float, default=10.0,
                        help="seconds to wait for subscribers to acknowledge the last messages")
    parser.add_argument("--json", action="store_true", help="print a summary as JSON")
    return parser


class BagPlayer:
    """The publishing side: one rclpy node with a publisher per topic of the bag."""

    def __init__(self, node, types: dict[str, str], *, reliability: str, depth: int,
                 clock_hz: float, stop=None):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.node = node
        self.stop = stop if stop is not None else StopRequest()  # ends waits and passes early
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                         durability=DurabilityPolicy.VOLATILE,
                         reliability=(ReliabilityPolicy.RELIABLE if reliability == "reliable"
                                      else ReliabilityPolicy.BEST_EFFORT))
        self.publishers = {topic: node.create_publisher(message_class(msgtype), topic, qos)
                           for topic, msgtype in types.items()}
        self.clock_period_ns = int(1e9 / clock_hz) if clock_hz > 0 else 0
        self.clock = None
        if self.clock_period_ns:
            from rosgraph_msgs.msg import Clock

            self.clock = node.create_publisher(Clock, "/clock", 10)
        self.published = {topic: 0 for topic in types}

    def wait_for_subscribers(self, timeout: float) -> list[str]:
        """Topics still without a subscriber after ``timeout`` seconds (empty: all matched)."""
        deadline = time.monotonic() + timeout
        while True:
            lonely = [t for t, p in self.publishers.items() if p.get_subscription_count() == 0]
            if not lonely or time.monotonic() >= deadline or self.stop.wait(0.05):
                return lonely

    def publish_clock(self, bag_time_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_time_ns), 1_000_000_000)
        self.clock.publish(msg)

    def play_once(self, bag: Path, *, rate: float, start_offset_ns: int) -> dict:
        """One pass over the bag; returns the first/last publication times and bag times."""
        first_log = None
        wall_start = first_publish = last_publish = None
        next_clock_ns = None
        last_log = None
        for topic, _, log_time, data in read_messages(bag, self.publishers):
            if self.stop.requested:
                break
            if first_log is None:
                bag_start = _bag_start(bag) if start_offset_ns else log_time
                if log_time < bag_start + start_offset_ns:
                    continue
                first_log, wall_start = log_time, time.monotonic()
            due = wall_start + (log_time - first_log) / 1e9 / rate
            # Between messages, /clock ticks at its own rate so sim-time timers keep running.
            if self.clock is not None and next_clock_ns is None:
                next_clock_ns = first_log
            while self.clock is not None:
                clock_due = wall_start + (next_clock_ns - first_log) / 1e9 / rate
                if clock_due > due:
                    break
                self._sleep_until(clock_due)
                self.publish_clock(next_clock_ns)
                next_clock_ns += self.clock_period_ns
            self._sleep_until(due)
            if self.stop.requested:
                break
            self.publishers[topic].publish(data)  # CDR bytes as recorded: no deserialization
            last_publish = time.monotonic()
            first_publish = first_publish or last_publish
            self.published[topic] += 1
            last_log = log_time
        return {"first_log_ns": first_log, "last_log_ns": last_log,
                "wall_first": first_publish, "wall_last": last_publish}

    def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self.stop.wait(remaining)

    def wait_for_acknowledgements(self, timeout: float) -> bool:
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout
        done = True
        for publisher in self.publishers.values():
            remaining = max(0.0, deadline - time.monotonic())
            done &= bool(publisher.wait_for_all_acked(Duration(seconds=remaining)))
        return done


def _bag_start(bag: Path) -> int:
    for _, _, log_time, _ in read_messages(bag):
        return log_time
    return 0


def main(argv: list[str] | None = None) -> int:
    return finish(_run(argv), as_command=argv is None)


def _run(argv) -> int:
    import rclpy
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(remove_ros_args(["pmt-bag-play", *argv])[1:])
    if not args.rate > 0:
        raise SystemExit("pmt-bag-play: --rate must be positive")
    try:
        available = bag_topics(args.bag)
    except BagError as error:
        print(f"pmt-bag-play: {error}", file=sys.stderr)
        return 2
    wanted = args.topics or sorted(available)
    unknown = [t for t in wanted if t not in available]
    if unknown:
        print(f"pmt-bag-play: bag {args.bag} has no topic {', '.join(unknown)} "
              f"(it has {', '.join(sorted(available))})", file=sys.stderr)
        return 2
    with StopRequest() as stop:
        init_rclpy(["pmt-bag-play", *argv])
        node = rclpy.create_node("pmt_bag_play")
        player, passes, acknowledged = None, [], None
        try:
            player = BagPlayer(node, {t: available[t] for t in wanted},
                               reliability=args.reliability, depth=args.depth,
                               clock_hz=args.clock, stop=stop)
            if args.wait_for_subscribers > 0:
                lonely = player.wait_for_subscribers(args.wait_for_subscribers)
                if lonely and not stop.requested:
                    node.get_logger().warning(f"no subscriber on {', '.join(lonely)}; "
                                              "playing anyway")
            while not stop.requested:
                passes.append(player.play_once(args.bag, rate=args.rate,
                                               start_offset_ns=int(round(args.start_offset * 1e9))))
                if not args.loop:
                    break
            if args.reliability == "reliable" and not stop.requested:
                acknowledged = player.wait_for_acknowledgements(args.tail_timeout)
        except BagError as error:
            print(f"pmt-bag-play: {error}", file=sys.stderr)
            return 2
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    if stop.requested:  # a stop is not an error: report what went out
        sent = sum(player.published.values()) if player is not None else 0
        print(f"pmt-bag-play: stopped ({stop.signal_name}) after {sent} messages",
              file=sys.stderr)
        return 0
    first = passes[0]
    if first["first_log_ns"] is None:
        print(f"pmt-bag-play: nothing to play in {args.bag} after the start offset",
              file=sys.stderr)
        return 2
    summary = {"bag": str(args.bag), "rate": args.rate, "published": player.published,
               "bag_seconds": (first["last_log_ns"] - first["first_log_ns"]) / 1e9,
               "wall_seconds": first["wall_last"] - first["wall_first"],
               "acknowledged": acknowledged}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"played {sum(player.published.values())} messages of {args.bag} in "
              f"{summary['wall_seconds']:.3f} s (bag: {summary['bag_seconds']:.3f} s at rate "
              f"{args.rate:g}); all acknowledged: {acknowledged}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
