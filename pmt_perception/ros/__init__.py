"""ROS 2 glue: the only package that imports rclpy or *_msgs (conversions, sync, nodes)."""
