"""Stereo synchronizer: exact and approximate pairing of image + camera_info streams."""
import random
import sys
import threading
import types

import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image

from pmt_perception.ros import sync as sync_module
from pmt_perception.ros.sync import (
    ApproximateTimeSynchronizer,
    InputSynchronizer,
    MessageInput,
    TimeSynchronizer,
    stamp_nanoseconds,
)

LEFT_IMAGE, RIGHT_IMAGE, LEFT_INFO, RIGHT_INFO = range(4)
FRAME_NS = 33_333_333  # 30 Hz


def stamped(index, stamp_ns):
    """A real message of the kind input ``index`` carries, stamped ``stamp_ns``."""
    msg = Image() if index in (LEFT_IMAGE, RIGHT_IMAGE) else CameraInfo()
    msg.header.stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    msg.header.frame_id = f"input{index}"
    return msg


class Recorder:
    def __init__(self):
        self.sets = []
        self.lock = threading.Lock()

    def __call__(self, *msgs):
        with self.lock:
            self.sets.append(msgs)

    def stamps(self):
        return [tuple(stamp_nanoseconds(m) for m in msgs) for msgs in self.sets]


def make_sync(*, approximate, queue_size=5, slop=0.005):
    inputs = [MessageInput() for _ in range(4)]
    if approximate:
        synchronizer = ApproximateTimeSynchronizer(inputs, queue_size, slop)
    else:
        synchronizer = TimeSynchronizer(inputs, queue_size)
    recorder = Recorder()
    synchronizer.registerCallback(recorder)
    return inputs, synchronizer, recorder


def test_stamp_nanoseconds_reads_headers():
    assert stamp_nanoseconds(stamped(0, 5_000_000_123)) == 5_000_000_123
    assert stamp_nanoseconds(object()) is None


@pytest.mark.parametrize("approximate", [False, True])
def test_exact_stamps_pair_in_input_order(approximate):
    inputs, _, recorder = make_sync(approximate=approximate)
    for frame in range(3):
        for index in (RIGHT_INFO, LEFT_IMAGE, LEFT_INFO, RIGHT_IMAGE):  # any arrival order
            inputs[index].signalMessage(stamped(index, 1_000_000_000 + frame * FRAME_NS))
    assert len(recorder.sets) == 3
    for frame, msgs in enumerate(recorder.sets):
        assert [m.header.frame_id for m in msgs] == ["input0", "input1", "input2", "input3"]
        assert {stamp_nanoseconds(m) for m in msgs} == {1_000_000_000 + frame * FRAME_NS}
    assert isinstance(recorder.sets[0][LEFT_IMAGE], Image)
    assert isinstance(recorder.sets[0][RIGHT_INFO], CameraInfo)


def test_exact_mode_never_pairs_different_stamps():
    inputs, _, recorder = make_sync(approximate=False)
    for index in range(4):
        inputs[index].signalMessage(stamped(index, 1_000_000_000 + index))  # 1 ns apart
    assert recorder.sets == []


def test_jittered_stamps_within_slop_pair():
    inputs, _, recorder = make_sync(approximate=True, slop=0.004)
    rng = random.Random(3)
    for frame in range(10):
        base = 2_000_000_000 + frame * FRAME_NS
        for index in range(4):
            inputs[index].signalMessage(stamped(index, base + rng.randint(0, 3_000_000)))
    assert len(recorder.sets) == 10
    for stamps in recorder.stamps():
        assert max(stamps) - min(stamps) <= 4_000_000


def test_out_of_slop_never_pairs_and_queues_stay_bounded():
    inputs, synchronizer, recorder = make_sync(approximate=True, queue_size=4, slop=0.005)
    for frame in range(50):
        base = 3_000_000_000 + frame * FRAME_NS
        for index in range(4):
            offset = 12_000_000 if index == RIGHT_IMAGE else 0  # right camera 12 ms late
            inputs[index].signalMessage(stamped(index, base + offset))
    assert recorder.sets == []
    assert all(len(queue) <= 4 for queue in synchronizer.queues)


@pytest.mark.parametrize("approximate", [False, True])
def test_a_silent_input_does_not_grow_the_queues(approximate):
    inputs, synchronizer, recorder = make_sync(approximate=approximate, queue_size=3)
    for frame in range(200):
        for index in (LEFT_IMAGE, RIGHT_IMAGE, LEFT_INFO):  # right camera_info never arrives
            inputs[index].signalMessage(stamped(index, frame * FRAME_NS))
    assert recorder.sets == []
    assert [len(queue) for queue in synchronizer.queues] == [3, 3, 3, 0]
    # when it finally arrives, the newest frame pairs
    inputs[RIGHT_INFO].signalMessage(stamped(RIGHT_INFO, 199 * FRAME_NS))
    assert recorder.stamps() == [(199 * FRAME_NS,) * 4]


def test_newest_complete_set_wins_and_output_never_goes_back_in_time():
    inputs, synchronizer, recorder = make_sync(approximate=True, slop=0.002)
    frame = [10 * FRAME_NS, 11 * FRAME_NS]
    # frame 0 is missing its right image while frame 1 completes
    for index in (LEFT_IMAGE, LEFT_INFO, RIGHT_INFO):
        inputs[index].signalMessage(stamped(index, frame[0]))
    for index in range(4):
        inputs[index].signalMessage(stamped(index, frame[1] + 1_000_000 * (index == 1)))
    assert [s[LEFT_IMAGE] for s in recorder.stamps()] == [frame[1]]
    # the late right image of frame 0 must not produce an older set now
    inputs[RIGHT_IMAGE].signalMessage(stamped(RIGHT_IMAGE, frame[0]))
    assert len(recorder.sets) == 1
    assert all(len(queue) == 0 for queue in synchronizer.queues)


def test_out_of_order_arrivals_across_frames():
    inputs, _, recorder = make_sync(approximate=True, slop=0.003, queue_size=5)
    rng = random.Random(7)
    arrivals = []
    for frame in range(40):
        base = 5_000_000_000 + frame * FRAME_NS
        # a frame's messages straggle over 2.5 frame periods, so they interleave with the
        # next frame's and sometimes complete after it
        arrivals.extend((frame + rng.random() * 2.5, index, frame, base + rng.randint(0, 2_000_000))
                        for index in range(4))
    arrivals.sort()
    for _, index, _, stamp in arrivals:
        inputs[index].signalMessage(stamped(index, stamp))

    # Reference model of the documented policy: a frame is emitted when its last message
    # arrives, unless a newer frame has already been emitted.
    expected, remaining, newest_emitted = [], {}, -1
    for _, _, frame, _ in arrivals:
        remaining[frame] = remaining.get(frame, 4) - 1
        if remaining[frame] == 0 and frame > newest_emitted:
            expected.append(frame)
            newest_emitted = frame
    emitted = [(s[LEFT_IMAGE] - 5_000_000_000) // FRAME_NS for s in recorder.stamps()]
    assert emitted == expected
    assert 20 < len(expected) < 40  # the scenario does drop some frames, and keeps most


def test_headerless_messages_need_allow_headerless():
    class Headerless:
        pass

    inputs = [MessageInput(), MessageInput()]
    strict = ApproximateTimeSynchronizer(inputs, 2, 1.0)
    recorder = Recorder()
    strict.registerCallback(recorder)
    inputs[0].signalMessage(Headerless())
    assert all(len(queue) == 0 for queue in strict.queues)

    lenient_inputs = [MessageInput(), MessageInput()]
    lenient = ApproximateTimeSynchronizer(lenient_inputs, 2, 1.0, allow_headerless=True)
    lenient.registerCallback(recorder)
    lenient_inputs[0].signalMessage(Headerless())
    lenient_inputs[1].signalMessage(Headerless())
    assert len(recorder.sets) == 1


def test_callback_arguments_are_appended_like_message_filters():
    inputs = [MessageInput(), MessageInput()]
    synchronizer = TimeSynchronizer(inputs, 2)
    received = []
    synchronizer.registerCallback(lambda a, b, tag: received.append((a, b, tag)), "extra")
    left, right = stamped(0, 7), stamped(1, 7)
    synchronizer.add(0, left)
    synchronizer.add(1, right)
    assert received == [(left, right, "extra")]


def test_concurrent_inputs_deliver_every_frame_once():
    inputs, _, recorder = make_sync(approximate=True, queue_size=1000, slop=0.001)
    frames = 300

    def feed(index):
        for frame in range(frames):
            inputs[index].signalMessage(stamped(index, frame * FRAME_NS))

    threads = [threading.Thread(target=feed, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lefts = [s[LEFT_IMAGE] for s in recorder.stamps()]
    assert sorted(lefts) == [frame * FRAME_NS for frame in range(frames)]


@pytest.mark.parametrize("build, message", [
    (lambda: TimeSynchronizer([MessageInput(), MessageInput()], 0), "queue_size"),
    (lambda: TimeSynchronizer([MessageInput()], 3), "at least 2 inputs"),
    (lambda: ApproximateTimeSynchronizer([MessageInput(), MessageInput()], 3, -0.1), "slop"),
    (lambda: InputSynchronizer(input_count=1, queue_size=3, approximate=False), "input_count"),
])
def test_bad_configuration_raises(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_input_synchronizer_without_message_filters():
    sync = InputSynchronizer(input_count=4, queue_size=5, approximate=True, slop=0.005,
                             prefer_message_filters=False)
    assert sync.backend == "pmt_perception"
    recorder = Recorder()
    sync.register_callback(recorder)
    for index in range(4):
        sync.add(index, stamped(index, 9 * FRAME_NS + 1000 * index))
    assert len(recorder.sets) == 1
    with pytest.raises(ValueError, match="out of range"):
        sync.add(4, stamped(0, 0))


def test_input_synchronizer_uses_message_filters_when_it_imports(monkeypatch):
    # A stand-in module with message_filters' Python API, to check the adapter wiring only.
    fake = types.ModuleType("message_filters")
    fake.SimpleFilter = MessageInput
    fake.TimeSynchronizer = TimeSynchronizer
    fake.ApproximateTimeSynchronizer = ApproximateTimeSynchronizer
    monkeypatch.setitem(sys.modules, "message_filters", fake)
    sync = InputSynchronizer(input_count=2, queue_size=2, approximate=False)
    assert sync.backend == "message_filters"
    assert sync_module._import_message_filters() is fake
    recorder = Recorder()
    sync.register_callback(recorder)
    sync.add(0, stamped(0, 42))
    sync.add(1, stamped(1, 42))
    assert recorder.stamps() == [(42, 42)]


# ----------------------------------------------------------------------------- real message_filters
def recorded_input(tmp_path, *, right_offset: float):
    """(index, msg) in log-time order from a bag pmt-bag-write made, messages as rosbags
    deserializes them; a few messages are left out, as DDS loss would."""
    from pmt_perception.data.bag_io import read_messages, typestore
    from pmt_perception.ros.bags import writer
    from pmt_perception.topics import StereoTopics

    bag = tmp_path / "recorded"
    assert writer.main(["--out", str(bag), "--num", "12", "--size", "64x64", "--rate", "10",
                        "--right-stamp-offset", str(right_offset), "--no-ground-truth"]) == 0
    index_of = {topic: i for i, topic in enumerate(StereoTopics().inputs())}
    store, stream = typestore(), []
    for topic, msgtype, _, data in read_messages(bag, list(index_of)):
        stream.append((index_of[topic], store.deserialize_cdr(data, msgtype)))
    # Lose frame 3's right image and frame 7's left camera_info.
    lost = {(RIGHT_IMAGE, 3), (LEFT_INFO, 7)}
    counts, kept = [0] * 4, []
    for index, msg in stream:
        if (index, counts[index]) not in lost:
            kept.append((index, msg))
        counts[index] += 1
    return kept


def paired_stamps(stream, *, prefer_message_filters, approximate):
    sync = InputSynchronizer(input_count=4, queue_size=5, approximate=approximate, slop=0.01,
                             prefer_message_filters=prefer_message_filters)
    recorder = Recorder()
    sync.register_callback(recorder)
    for index, msg in stream:
        sync.add(index, msg)
    return sync.backend, recorder.stamps()


@pytest.mark.parametrize("approximate, right_offset", [(False, 0.0), (True, 0.004)])
def test_message_filters_pairs_the_same_sets_as_the_package_synchronizer(
        tmp_path, approximate, right_offset):
    pytest.importorskip("message_filters", reason="message_filters is not installed "
                                                  "(../shared/ros2_python/install.sh)")
    stream = recorded_input(tmp_path, right_offset=right_offset)
    ours = paired_stamps(stream, prefer_message_filters=False, approximate=approximate)
    theirs = paired_stamps(stream, prefer_message_filters=True, approximate=approximate)
    assert (ours[0], theirs[0]) == ("pmt_perception", "message_filters")
    assert len(ours[1]) == 10   # 12 frames, 2 incomplete
    assert theirs[1] == ours[1]


def test_bag_frames_pair_alike_with_message_filters_and_the_bag_reader(tmp_path):
    """rosbags' deserialized messages are not rclpy messages: the real message_filters must
    still pair them (it used to raise 'Must pass a builtin_interfaces.msg.Time object'), and the
    bag reader (data/bag.py, no ROS: the package's synchronizer) pairs the same sets."""
    pytest.importorskip("message_filters", reason="message_filters is not installed")
    from pmt_perception.data.bag import read_stereo_frames

    for approximate, offset in ((False, 0.0), (True, 0.004)):
        stream = recorded_input(tmp_path / str(approximate), right_offset=offset)
        backend, theirs = paired_stamps(stream, prefer_message_filters=True,
                                        approximate=approximate)
        assert backend == "message_filters" and len(theirs) == 10
        frames = list(read_stereo_frames(tmp_path / str(approximate) / "recorded",
                                         approximate=approximate, slop=0.01))
        # The bag itself lost nothing: 12 frames, of which the stream above dropped 2.
        assert len(frames) == 12
        assert {f.stamp_ns for f in frames} >= {stamps[0] for stamps in theirs}
