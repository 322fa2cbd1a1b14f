"""ROS 2 bags without rosbag2: the parts that need rclpy (write, replay, record, closed loop).

Bags are read and written with the pure-Python ``rosbags`` library (sqlite3 and MCAP storage),
so this works on machines where rosbag2 and the ``ros2`` CLI are not installable (DESIGN §5).
Messages are serialized with rclpy's own CDR serializer, so a bag written here replays byte for
byte through ``ros2 bag play`` and through :mod:`pmt_perception.ros.bags.play`.

    layout.py       rclpy message classes of the type names bags store
    writer.py       pmt-bag-write: a dataset -> bag
    play.py         pmt-bag-play: publish a bag with its original timing
    record.py       pmt-bag-record: subscribe and write to a bag
    closed_loop.py  score a recording of the live node against the bag it was fed

Reading a bag needs no ROS and is a data source like any dataset: pmt_perception/data/bag.py
(frames, `pmt-evaluate --data bag`), data/bag_io.py (open / create bags with errors that name
the bag), data/ros_messages.py (message fields -> numpy).
"""
