"""Bounded YAML reading (perception/yaml_io.py) for every YAML the node reads: each hostile file of issue 12
gives the reader's error class naming the file, with a short message, fast."""

import os
import time
from pathlib import Path

import pytest

from calib.rig import load_rig
from perception.errors import CalibrationError, ConfigError
from perception.node.config import load_config
from perception.yaml_io import brief, load_yaml
from replay.compare import CompareConfig

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))

READERS = {  # reader, its error class, a valid document's top mapping key for embedding a value
    "calibration": (load_rig, CalibrationError),
    "node config": (load_config, ConfigError),
    "tolerances": (CompareConfig.load, ConfigError),
}

HOSTILE_TEXT = {
    "billion laughs": (LAUGHS, "anchors and aliases"),
    "5000-deep nesting": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    "5000-deep block nesting": ("".join(" " * i + "- \n" for i in range(0, 5000, 1))[:200000], "nested deeper"),
    "timestamp tag": ("a: !!timestamp 2001-12-14\n", "tag"),
    "python tag": ("a: !!python/object/apply:os.system [echo]\n", "tag"),
    "int abc": ("a: !!int abc\n", "not an integer"),
    "400-digit integer": ("a: " + "9" * 400 + "\n", "64-bit range"),
    "bool abc": ("a: !!bool maybe\n", "not true/false"),
    "float abc": ("a: !!float abc\n", "not a number"),
    "binary tag": ("a: !!binary aGVsbG8=\n", "tag"),
    "set tag": ("a: !!set {x}\n", "tag"),
    "unhashable key": ("? [1, 2]\n: x\n", "not valid YAML"),
    "two documents": ("a: 1\n---\nb: 2\n", "not valid YAML"),
    "tab indentation": ("a:\n\tb: 1\n", "not valid YAML"),
}


def _check(reader, error, path, phrase):
    start = time.perf_counter()
    with pytest.raises(error) as e:
        reader(path)
    assert time.perf_counter() - start < 5.0
    message = str(e.value)
    assert phrase in message, message
    assert len(message) < 600, message[:600]
    return message


@pytest.mark.parametrize("reader_name", READERS)
@pytest.mark.parametrize("case", HOSTILE_TEXT)
def test_hostile_yaml_is_refused_by_every_reader(tmp_path, reader_name, case):
    reader, error = READERS[reader_name]
    text, phrase = HOSTILE_TEXT[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    message = _check(reader, error, path, phrase)
    assert str(path) in message


@pytest.mark.parametrize("reader_name", READERS)
def test_unreadable_paths(tmp_path, reader_name):
    reader, error = READERS[reader_name]
    _check(reader, error, tmp_path, "a directory")
    _check(reader, error, "/dev/zero", "not a regular file")
    _check(reader, error, tmp_path / "absent.yaml", "No such file")
    _check(reader, error, str(tmp_path / "a\0b.yaml"), "NUL byte")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _check(reader, error, fifo, "not a regular file")  # and the open does not block
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"a: caf\xe9\n")
    _check(reader, error, bad, "not a UTF-8 text file")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (4 << 20) + b"\n")
    _check(reader, error, big, "over the limit of")


def test_plain_dates_stay_strings_and_core_values_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("when: 2001-12-14\nn: 0x10\nf: 1.5e+3\nb: yes\nnothing: ~\nnested: {a: [1, 2, {b: c}]}\n")
    assert load_yaml(path, 1000, ConfigError) == {
        "when": "2001-12-14", "n": 16, "f": 1500.0, "b": True, "nothing": None, "nested": {"a": [1, 2, {"b": "c"}]}}


def test_brief_is_bounded():
    assert len(brief("x" * 10_000_000)) < 80
    assert len(brief([[list(range(1000))] * 1000] * 1000)) < 200


RIG_CAMERA = ("format: perception-rig\nversion: 1\ncameras:\n- name: front\n  width: 1920\n  height: 1080\n"
              "  fx: 1000.0\n  fy: 1000.0\n  cx: 960.0\n  cy: 540.0\n  distortion: {distortion}\n"
              "  coeffs: {coeffs}\n  T_vehicle_camera: [[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 1.5], [0, 0, 0, 1]]\n")


@pytest.mark.parametrize("distortion, coeffs, field", [
    ("[plumb_bob]", "[0, 0, 0, 0, 0]", "distortion"),
    ("{a: b}", "[]", "distortion"),
    ("none", "['1e3']", "coeffs"),
    ("none", "[true]", "coeffs"),
    ("none", "x" * 100_000, "coeffs"),
])
def test_calibration_wrong_types_name_the_field(tmp_path, distortion, coeffs, field):
    path = tmp_path / "rig.yaml"
    path.write_text(RIG_CAMERA.format(distortion=distortion, coeffs=coeffs))
    message = _check(load_rig, CalibrationError, path, f"field {field!r}")
    assert "camera 'front'" in message


def test_valid_rig_template_loads(tmp_path):
    path = tmp_path / "rig.yaml"
    path.write_text(RIG_CAMERA.format(distortion="none", coeffs="[]"))
    assert load_rig(path).names == ("front",)


def test_node_config_long_values_are_truncated(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("preprocess: " + "x" * 500_000 + "\n")
    message = _check(load_config, ConfigError, path, "preprocess")
    assert "..." in message
