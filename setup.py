"""ament_python build description; also a plain setuptools package for `pip install`."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pmt_perception"


def share_tree(folder):
    """data_files entries that install `folder` (recursively) under share/<package>/."""
    entries = []
    for root, _dirs, files in os.walk(folder):
        paths = [os.path.join(root, f) for f in files if not f.endswith((".pyc", ".gitkeep"))]
        if paths:
            entries.append((os.path.join("share", PACKAGE, root), paths))
    return entries


# Console commands: `pmt-*` on PATH after pip install, and `ros2 run pmt_perception NAME`
# through the script_dir of setup.cfg after colcon build.
COMMANDS = {
    "pmt-info": "pmt_perception.info:main",
    "pmt-demo": "pmt_perception.demo:main",
    "pmt-synth": "pmt_perception.data.synth_cli:main",
    "pmt-fetch-textures": "pmt_perception.data.synthetic.fetch_textures:main",
    "pmt-export": "pmt_perception.export:main",
    "pmt-train": "pmt_perception.train:main",
    "train": "pmt_perception.train:main",
    "pmt-evaluate": "pmt_perception.evaluate:main",
    "pmt-adapt": "pmt_perception.adapt_cli:main",
    "pmt-bag-write": "pmt_perception.ros.bags.writer:main",
    "pmt-bag-play": "pmt_perception.ros.bags.play:main",
    "pmt-bag-record": "pmt_perception.ros.bags.record:main",
    "pmt-bag-loop": "pmt_perception.ros.bags.closed_loop:main",
    "stereo_seg_node": "pmt_perception.ros.node:main",
    "stereo_source": "pmt_perception.ros.stereo_source:main",
    "stereo_seg_monitor": "pmt_perception.ros.monitor:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        *share_tree("config"),
        *share_tree("models"),
    ],
    install_requires=["setuptools", "numpy", "pyyaml"],
    # Optional CPU runtimes: `backend: auto` takes the fastest installed (docs/performance.md).
    extras_require={"runtimes": ["openvino", "onnxruntime", "nncf"]},
    zip_safe=True,
    maintainer="pmt_perception maintainers",
    maintainer_email="maintainers@pmt-perception.dev",
    description="Joint semantic segmentation, disparity and point clouds from one stereo network (PMT).",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in COMMANDS.items()]},
)
