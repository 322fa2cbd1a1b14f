"""ROS 2 bags without rosbag2: write datasets as bags, read stereo frames back, replay, record.

Bags are read and written with the pure-Python ``rosbags`` library (sqlite3 and MCAP storage),
so this works on machines where rosbag2 and the ``ros2`` CLI are not installable (DESIGN §5).
Messages are serialized with rclpy's own CDR serializer, so a bag written here replays byte for
byte through ``ros2 bag play`` and through :mod:`pmt_perception.ros.bags.play`.

    layout.py       topic names and message types of a stereo bag (the node's defaults)
    io.py           open / create bags with errors that name the bag
    writer.py       pmt-bag-write: a dataset -> bag
    reader.py       bag -> synchronized stereo frames (+ ground truth), the node's pairing rules
    evaluation.py   pmt-evaluate --bag: Predictor over a bag's frames, report + stability
    play.py         pmt-bag-play: publish a bag with its original timing
    record.py       pmt-bag-record: subscribe and write to a bag
    closed_loop.py  score a recording of the live node against the bag it was fed
"""
