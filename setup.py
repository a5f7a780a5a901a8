from setuptools import find_packages, setup

setup(
    name="perception",
    version="0.1.0",
    description="Streaming multi-camera perception node: CUDA preprocessing, temporal CNN, ZeroMQ output, replay",
    python_requires=">=3.10",
    packages=find_packages(include=["perception*", "calib*", "replay*", "kernels*"]),
    package_data={"kernels": ["*.cu", "*.h", "*.cpp"]},
    # the bundled model: an installed (not editable) package finds it under <prefix>/share/perception/models
    # (perception/node/defaults.py); a checkout uses models/ in place
    data_files=[("share/perception/models", ["models/demo.onnx", "models/demo.int8.onnx", "models/demo.json", "models/yolox_nano.card.yaml"])],
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyzmq>=25",
        "msgpack>=1.0",
        "onnxruntime>=1.17",
        "onnx>=1.15",  # parses and checks untrusted model files before onnxruntime sees them (perception/contract.py)
        "mcap>=1.1",
        "zstandard",
        "lz4",
        "mcap-protobuf-support>=0.5",
        "foxglove-schemas-protobuf>=0.3",
        "foxglove-sdk>=0.30",  # live view: perception run --foxglove (perception/io/foxglove_live.py)
        "av>=12",  # the report's H.264 overlay video (replay/report/frames.py)
        "mcap-ros2-support>=0.5",
        "rosbags>=0.10",  # sqlite3 rosbag2 input (perception/io/ros2bag.py)
        "PyYAML>=6",
        "Pillow>=10",
        "scipy>=1.10",
        "tqdm",
        "rich",
        "matplotlib>=3.6",  # perception replay report (Agg backend, no display)
    ],
    extras_require={
        "train": ["torch==2.13.0", "torch-pruning==1.6.1", "onnx", "onnxscript", "pycocotools"],  # pycocotools: validation mAP
        "gpu": ["pycuda", "tensorrt", "cuda-python"],
        "fleet": ["duckdb==2.0.1"],  # perception index / search (replay/index)
        "ray": ["duckdb==2.0.1", "ray==2.60.0"],  # --ray: drives spread over a Ray cluster (replay/fleet)
        "dev": ["pytest", "hypothesis>=6.100", "torch==2.13.0", "torch-pruning==1.6.1", "onnx", "onnxscript", "pycocotools", "motmetrics", "matplotlib",
                "jsonschema", "websockets", "duckdb==2.0.1", "ray==2.60.0"],  # schema-only decoding of run files, live-server client
    },
    entry_points={
        "console_scripts": ["perception=perception.cli:main"],
        # named as its module, so a conftest's `pytest_plugins = ["replay.pytest_plugin"]` does not load it twice
        "pytest11": ["replay.pytest_plugin = replay.pytest_plugin"],
    },
)
