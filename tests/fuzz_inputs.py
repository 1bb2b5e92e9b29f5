"""Library-level fuzz targets: the v2 decoders, the transforms and the config loader.

Each target is a Hypothesis strategy and a ``*_problem`` function that answers what is wrong
with one generated input (None: nothing). The property: a decoder gives a request or a
``ProtocolError`` (400); a transform gives a result or a ``ValueError``/``TypeError`` (and,
where torchvision is importable and it succeeds too, torchvision's result); the config
loader gives a ``Config`` or a ``ConfigError``. Shared by ``tests/test_fuzz_properties.py``
and ``bench/fuzz.py``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from model_agnostic.config import SCHEMA, Config, load_config
from model_agnostic.errors import ConfigError, ProtocolError, TensorSpecError
from model_agnostic.protocol import (
    DATATYPES,
    HEADER_LENGTH,
    decode_infer_request,
    decode_infer_response,
    encode_infer_response,
)
from model_agnostic.tensors import TensorSpec, check_arrays
from tests.fuzz_requests import BAD_LENGTHS

__all__ = ["TINY_INPUT", "TOML_SOUP", "TransformCase", "binary_requests", "config_documents",
           "config_problem", "decode_problem", "raw_requests", "response_problem", "to_toml",
           "transform_cases", "transform_problem"]

#: The tiny model's input, as the server passes it for raw bodies and checks inputs with.
TINY_INPUT = TensorSpec("image", np.dtype(np.float32), ("batch", 3, 8, 8))


# -------------------------------------------------------------------------------- decoders
def decode_problem(body: bytes, header: str | None,
                   raw_input: TensorSpec | None = TINY_INPUT) -> str | None:
    """Decode like the server, then check, answer and read the answer back like a client."""
    try:
        request = decode_infer_request(body, header, raw_input=raw_input, max_elements=1 << 20)
    except ProtocolError as error:
        return None if error.status == 400 and str(error) else f"bad ProtocolError {error!r}"
    except Exception as error:  # noqa: BLE001 - the finding
        return f"decode_infer_request raised {type(error).__name__}: {error}"
    for name, array in request.inputs.items():
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            return f"input {name!r} decoded as {type(array).__name__}, not a C-contiguous array"
    try:
        check_arrays([raw_input] if raw_input else [], request.inputs, "the request")
    except TensorSpecError:
        pass
    except Exception as error:  # noqa: BLE001
        return f"check_arrays raised {type(error).__name__}: {error}"
    return _round_trip_problem(request)


def _round_trip_problem(request: Any) -> str | None:
    try:
        answer, headers = encode_infer_response("m", "1", request, request.inputs)
    except ProtocolError as error:  # an unknown output (400); non-UTF-8 BYTES as JSON (500)
        return None if error.status in (400, 500) else f"bad ProtocolError {error!r}"
    except Exception as error:  # noqa: BLE001
        return f"encode_infer_response raised {type(error).__name__}: {error}"
    try:
        outputs, _ = decode_infer_response(answer, headers.get(HEADER_LENGTH))
    except ProtocolError as error:
        return f"our own answer does not decode: {error}"
    for name, sent in request.inputs.items():
        got = outputs.get(name)
        if request.outputs is not None and name not in {o.name for o in request.outputs}:
            continue
        if got is None or got.shape != sent.shape or got.dtype != sent.dtype:
            return f"output {name!r} came back as {got!r:.100}, sent {sent!r:.100}"
    return None


def response_problem(body: bytes, header: str | None) -> str | None:
    try:
        decode_infer_response(body, header)
    except ProtocolError:
        return None
    except Exception as error:  # noqa: BLE001
        return f"decode_infer_response raised {type(error).__name__}: {error}"
    return None


def _size(datatype: str, count: int, tail: bytes) -> int:
    return len(tail) if datatype == "BYTES" else count * DATATYPES[datatype].itemsize


@st.composite
def binary_requests(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """Bodies with binary tensors of any datatype; sizes and header often slightly off."""
    entries, tails = [], []
    for index in range(draw(st.integers(1, 3))):
        datatype = draw(st.sampled_from(list(DATATYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        count = math.prod(shape)
        if datatype == "BYTES":
            items = draw(st.lists(st.binary(max_size=5), min_size=count, max_size=count))
            tail = b"".join(len(i).to_bytes(4, "little") + i for i in items)
        else:
            tail = draw(st.binary(min_size=_size(datatype, count, b""),
                                  max_size=_size(datatype, count, b"")))
        size = draw(st.sampled_from([_size(datatype, count, tail)]) | st.integers(-2, 64)
                    | st.sampled_from([2**63, 2**64, 1.0, "8", None]))
        entry: dict[str, Any] = {"name": f"t{index}", "shape": shape, "datatype": datatype,
                                 "parameters": {"binary_data_size": size}}
        if draw(st.integers(0, 9)) == 0:
            entry["data"] = [0] * count
        entries.append(entry)
        tails.append(tail)
    doc = {"inputs": entries, "outputs": draw(st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(["t0", "t1", "t2"])},
        optional={"parameters": st.fixed_dictionaries({"binary_data": st.booleans()})}),
        max_size=2, unique_by=lambda o: str(o["name"])))}
    header = json.dumps(doc).encode()
    body = header + b"".join(tails) + draw(st.binary(max_size=3))
    length = draw(st.just(str(len(header))) | st.integers(0, len(body) + 4).map(str)
                  | BAD_LENGTHS | st.none())
    return body, length


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[TensorSpec, bytes]:
    """A raw body (``Inference-Header-Content-Length: 0``) for a random single-input spec."""
    datatype = draw(st.sampled_from(list(DATATYPES)))
    dims = st.integers(0, 5) | st.sampled_from([None, "batch", -1])
    shape = draw(st.none() | st.lists(dims, max_size=4).map(tuple))
    spec = TensorSpec("x", DATATYPES[datatype].newbyteorder("="), shape)
    return spec, draw(st.binary(max_size=96))


# ------------------------------------------------------------------------------ transforms
TRANSFORM_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16", "F", "CMYK", "YCbCr"]
_INTS = st.integers(-3, 40)
_SIZES = _INTS | st.lists(_INTS, max_size=3) | st.sampled_from([None, "8", 2.5, True, (3.0, 4)])
_PADDING = _INTS | st.lists(_INTS, max_size=5) | st.sampled_from([None, 1.5, "2", True])
_FILL = st.sampled_from([0, 255, 1.5, -1, (1, 2, 3), [4], (1, 2, 3, 4), None, "x", 300])
_PAD_MODES = st.sampled_from(["constant", "edge", "reflect", "symmetric", "wrap", 3])
_INTERPOLATIONS = st.sampled_from(["nearest", "nearest-exact", "bilinear", "bicubic", "box",
                                   "hamming", "lanczos"]).map(lambda v: ("mode", v)) | \
    st.sampled_from([0, 1, 2, 3, 4, 5, 7, "bilinear", "BICUBIC", None, 2.0])


@dataclass(frozen=True)
class TransformCase:
    """``name`` (a class of model_agnostic.transforms, or ``F.<function>``) with ``kwargs``
    applied to ``image`` (a PIL image or a numpy array)."""

    name: str
    kwargs: tuple[tuple[str, Any], ...]
    image: Any


def _calls(channels: int | None) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """Transform names and arguments; ``channels`` is set for CHW arrays."""
    moments = st.lists(st.floats(-2, 2), min_size=1, max_size=4)
    if channels is not None:
        moments = moments | st.lists(st.floats(0.1, 2), min_size=channels, max_size=channels)
    pad = st.fixed_dictionaries({"padding": _PADDING},
                                optional={"fill": _FILL, "padding_mode": _PAD_MODES})
    shared = [
        st.tuples(st.just("CenterCrop"), st.fixed_dictionaries({"size": _SIZES})),
        st.tuples(st.just("FiveCrop"), st.fixed_dictionaries({"size": _SIZES})),
        st.tuples(st.just("TenCrop"), st.fixed_dictionaries(
            {"size": _SIZES}, optional={"vertical_flip": st.booleans()})),
        st.tuples(st.just("Pad"), pad),
        st.tuples(st.just("ToTensor"), st.just({})),
        st.tuples(st.just("F.crop"), st.fixed_dictionaries(
            {"top": _INTS, "left": _INTS, "height": _INTS, "width": _INTS})),
        st.tuples(st.sampled_from(["F.hflip", "F.vflip"]), st.just({})),
    ]
    if channels is not None:
        return st.one_of(*shared, st.tuples(st.just("Normalize"), st.fixed_dictionaries(
            {"mean": moments, "std": moments | st.just([0.0])},
            optional={"inplace": st.booleans()})))
    return st.one_of(*shared, st.tuples(st.just("Resize"), st.fixed_dictionaries(
        {"size": _SIZES}, optional={"interpolation": _INTERPOLATIONS,
                                    "max_size": st.none() | _INTS,
                                    "antialias": st.sampled_from([True, None])})),
        st.tuples(st.just("Grayscale"), st.fixed_dictionaries(
            {}, optional={"num_output_channels": st.sampled_from([1, 3, 2, 0])})),
        st.tuples(st.just("PILToTensor"), st.just({})))


def make_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """A random PIL image of ``mode``."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width)).astype(bool))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31, (height, width), dtype=np.int32))
    if mode == "I;16":
        data = rng.integers(0, 2**16, (height, width)).astype("<u2")
        return Image.frombytes(mode, (width, height), data.tobytes())
    if mode == "F":
        return Image.fromarray((rng.standard_normal((height, width)) * 1000).astype(np.float32))
    if mode == "P":
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        return image
    bands = Image.getmodebands(mode)
    data = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
    return Image.frombytes(mode, (width, height), data.tobytes())


@st.composite
def transform_cases(draw: st.DrawFn) -> TransformCase:
    """A random PIL image (any mode, 1-24 px a side) or CHW array, and a random call."""
    seed = draw(st.integers(0, 99))
    image: Image.Image | np.ndarray
    if draw(st.booleans()):
        image = make_image(draw(st.sampled_from(TRANSFORM_MODES)), draw(st.integers(1, 24)),
                           draw(st.integers(1, 24)), seed)
        name, kwargs = draw(_calls(None))
    else:
        shape = draw(st.lists(st.integers(0, 9), max_size=5))
        dtype = draw(st.sampled_from(["float32", "float64", "uint8", "int16"]))
        image = (np.random.default_rng(seed).random(shape) * 255).astype(dtype)
        name, kwargs = draw(_calls(shape[-3] if len(shape) >= 3 else 1))
    return TransformCase(name, tuple(kwargs.items()), image)


def _build(module: Any, functional: Any, case: TransformCase) -> Any:
    """The call ``case`` describes, from ``module`` (ours or torchvision's transforms)."""
    kwargs = dict(case.kwargs)
    interpolation = kwargs.get("interpolation")
    if isinstance(interpolation, tuple):  # ("mode", value): that module's InterpolationMode
        kwargs["interpolation"] = module.InterpolationMode(interpolation[1])
    if case.name.startswith("F."):
        function = getattr(functional, case.name[2:])
        return lambda image: function(image, **kwargs)
    return getattr(module, case.name)(**kwargs)


def transform_problem(case: TransformCase, torchvision: bool = True) -> str | None:
    """Ours gives a result or ValueError/TypeError; equal to torchvision's where both run."""
    import model_agnostic.transforms as ours
    import model_agnostic.transforms.functional as ours_f

    image = case.image.copy() if isinstance(case.image, np.ndarray) else case.image
    try:
        result = _build(ours, ours_f, case)(image)
    except (ValueError, TypeError):
        return None
    except Exception as error:  # noqa: BLE001 - the finding
        return f"{case.name}{dict(case.kwargs)} raised {type(error).__name__}: {error}"
    if not torchvision:
        return None
    return _parity_problem(case, result)


def _parity_problem(case: TransformCase, result: Any) -> str | None:
    try:
        import torch
        import torchvision.transforms as theirs
        import torchvision.transforms.functional as theirs_f
    except ImportError:
        return None
    image = case.image
    if isinstance(image, np.ndarray) and case.name != "ToTensor":
        image = torch.from_numpy(image.copy())
    try:
        expected = _build(theirs, theirs_f, case)(image)
    except Exception:  # noqa: BLE001 - torchvision refuses more (or other) arguments
        return None
    if not _same(result, expected):
        return f"{case.name}{dict(case.kwargs)} differs from torchvision's"
    return None


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, (tuple, list)):
        return (isinstance(ours, (tuple, list)) and len(ours) == len(theirs)
                and all(_same(a, b) for a, b in zip(ours, theirs)))
    if isinstance(theirs, Image.Image):
        return isinstance(ours, Image.Image) and (
            ours.mode, ours.size, ours.tobytes(), ours.getpalette()) == (
            theirs.mode, theirs.size, theirs.tobytes(), theirs.getpalette())
    expected = theirs.numpy()
    if not isinstance(ours, np.ndarray) or (ours.shape, ours.dtype) != (expected.shape,
                                                                       expected.dtype):
        return False
    with np.errstate(invalid="ignore"):
        return bool(ours.size == 0 or np.allclose(ours.astype(np.float64),
                                                  expected.astype(np.float64),
                                                  rtol=0, atol=1e-6, equal_nan=True))


# ---------------------------------------------------------------------------- config files
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


class TomlLiteral(str):
    """A value written as is (dates and times)."""


def _toml_value(value: Any) -> str:
    if isinstance(value, TomlLiteral):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else \
            {"inf": "inf", "-inf": "-inf"}.get(repr(value), "nan")
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    assert isinstance(value, dict), value
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: dict[str, Any]) -> str:
    """A TOML document: plain values at the top, then one ``[table]`` per dict value."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in document.items()
             if not isinstance(v, dict)]
    for name, table in document.items():
        if isinstance(table, dict):
            lines.append(f"\n[{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


_TOML_VALUES = st.recursive(
    st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | _TEXT
    | st.sampled_from(["1979-05-27", "07:32:00", "1979-05-27T07:32:00Z"]).map(TomlLiteral),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8)
_STRINGS = _TEXT | st.sampled_from(["tests.tiny_models:TinyNet", "x.py:Y", "", "onnxruntime",
                                     "latest:2", "specific:1,3", "a\x00b", "/" * 3, "a/" * 2000])
_VALUES_FOR = {(str,): _STRINGS, (bool,): st.booleans(), (int,): st.integers(-(2**63), 2**63 - 1),
               (int, float): st.floats() | st.integers(-5, 5), "path": _STRINGS,
               dict: st.dictionaries(_TEXT, _TOML_VALUES, max_size=3)}


def _value_for(expected: Any, fitting: bool) -> st.SearchStrategy[Any]:
    """A value of the ``expected`` config type when ``fitting`` (lists: any), else any."""
    typed = _VALUES_FOR.get(expected)
    if not fitting or typed is None:
        return _TOML_VALUES
    return typed


@st.composite
def config_documents(draw: st.DrawFn) -> str:
    """A TOML config. Half are well-formed (schema sections and keys, values mostly of the
    right type) so validation runs deep; the rest have any sections, keys and values."""
    strict = draw(st.booleans())
    names = st.sampled_from(sorted(SCHEMA.keys() - {""}))
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["backend"] = draw(_value_for((str,), strict))
    for section in draw(st.lists(names if strict else names | _TEXT, max_size=4, unique=True)):
        keys = SCHEMA.get(section, {})
        known = st.sampled_from(sorted(keys)) if keys else _TEXT
        chosen = draw(st.lists(known if strict else known | _TEXT, max_size=4, unique=True))
        doc[section] = {key: draw(_value_for(keys.get(key), strict and draw(st.integers(0, 5))
                                             > 0)) for key in chosen}
        if not strict and draw(st.integers(0, 9)) == 0:
            doc[section] = draw(_TOML_VALUES)
    if (strict or draw(st.booleans())) and isinstance(doc.setdefault("model", {}), dict):
        doc["model"]["class"] = "tests.tiny_models:TinyNet"
    return to_toml(doc)


TOML_SOUP = st.lists(st.sampled_from(
    ["[", "]", "[[", "]]", "=", '"', "'", "'''", '"""', "\n", " ", ".", "{", "}", ",", "#",
    "model", "class", "server", "port", "1", "-0", "1e9", "true", "inf", "nan", "\\u0000",
    "\\", "1979-05-27", "T07:32:00", "Z"]) | _TEXT, max_size=30).map("".join) | st.builds(
    lambda n, inline: "a = " + ("{b = " * n + "1" + "}" * n if inline else "[" * n + "]" * n),
    st.integers(1, 3000), st.booleans())


def config_problem(source: str | bytes, folder: Path) -> str | None:
    """``load_config`` of ``source`` written to ``folder/config.toml``: Config or ConfigError."""
    path = folder / "config.toml"
    path.write_bytes(source.encode() if isinstance(source, str) else source)
    try:
        config = load_config(path)
    except ConfigError as error:
        return None if str(error) else "ConfigError without a message"
    except Exception as error:  # noqa: BLE001 - the finding
        return f"load_config raised {type(error).__name__}: {str(error)[:200]}"
    return None if isinstance(config, Config) else f"load_config returned {config!r:.100}"

