"""pmt_perception: semantic segmentation, disparity and point clouds from one stereo network."""
__version__ = "0.1.0"
