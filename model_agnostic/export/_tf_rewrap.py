"""Runs inside the converter's venv (TensorFlow 2.19, no model_agnostic): re-wraps the
SavedModel onnx2tf wrote so that ``serving_default`` has the ONNX graph's names and layout.

onnx2tf names the signature's outputs ``output_0``, ``output_1``... (in the graph's output
order) and hands 4-D outputs back as NHWC; the wrapper keeps the model's own input names,
calls onnx2tf's signature, transposes NHWC outputs back to NCHW and names every output.
Usage: ``python _tf_rewrap.py '{"source": ..., "target": ..., "inputs": [[name, dtype,
shape]], "outputs": [[name, shape]]}'``; prints one JSON line (versions, transposed outputs).
"""

import json
import sys


def _same(shape, want):
    return len(shape) == len(want) and all(
        w is None or s is None or s == w for s, w in zip(shape, want)
    )


def _layout(tf_shape, onnx_shape):
    """None when the shapes already match, the NHWC -> NCHW permutation when they are
    transposed; raise when neither holds."""
    if _same(tf_shape, onnx_shape):
        return None
    if len(onnx_shape) >= 3:
        rank = len(onnx_shape)
        channels_last = [onnx_shape[0], *onnx_shape[2:], onnx_shape[1]]
        if _same(tf_shape, channels_last):
            return [0, rank - 1, *range(1, rank - 1)]
    raise ValueError(f"onnx2tf's output has shape {tf_shape}; the ONNX graph's is {onnx_shape}")


def main(spec):
    import tensorflow as tf

    loaded = tf.saved_model.load(spec["source"])
    inner = loaded.signatures["serving_default"]
    _, given = inner.structured_input_signature
    produced = inner.structured_outputs
    if len(given) != len(spec["inputs"]):
        raise ValueError(f"onnx2tf's signature has inputs {sorted(given)}, ours {spec['inputs']}")
    keys = sorted(produced, key=lambda k: int(k.rsplit("_", 1)[-1]) if k[-1].isdigit() else k)
    if len(keys) != len(spec["outputs"]):
        raise ValueError(f"onnx2tf's signature has outputs {keys}, ours {spec['outputs']}")
    # onnx2tf keeps input names it can (sanitized otherwise), in the graph's order
    inner_inputs = [
        name if name in given else sorted(given)[i] for i, (name, _, _) in enumerate(spec["inputs"])
    ]
    perms = {}
    for key, (name, shape) in zip(keys, spec["outputs"]):
        perms[name] = _layout(produced[key].shape.as_list(), shape)
    signature = [
        tf.TensorSpec([d if d is not None and d >= 0 else None for d in shape], dtype, name=name)
        for name, dtype, shape in spec["inputs"]
    ]

    class Wrapped(tf.Module):
        def __init__(self):
            super().__init__()
            self.inner = loaded  # tracked: its variables are saved with the wrapper

        @tf.function(input_signature=signature)
        def serve(self, *tensors):
            answer = inner(**dict(zip(inner_inputs, tensors)))
            named = {}
            for key, (name, _) in zip(keys, spec["outputs"]):
                value = answer[key]
                if perms[name] is not None:
                    value = tf.transpose(value, perms[name])
                named[name] = tf.identity(value, name=name.replace(":", "_"))
            return named

    wrapped = Wrapped()
    tf.saved_model.save(wrapped, spec["target"], signatures={"serving_default": wrapped.serve})
    versions = {"tensorflow_converter": tf.__version__}
    for module in ("onnx", "onnxruntime", "onnxsim"):
        try:
            versions[module + "_converter"] = __import__(module).__version__
        except Exception:  # a missing version is not a failure
            pass
    transposed = [name for name, perm in perms.items() if perm is not None]
    print(json.dumps({"versions": versions, "transposed": transposed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
