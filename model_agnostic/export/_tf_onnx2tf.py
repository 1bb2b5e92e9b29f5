"""Runs inside the converter's venv (no model_agnostic): onnx2tf's command line, stopped
once the SavedModel is written.

After writing the SavedModel, onnx2tf 1.29.24 always converts the model to TFLite twice
more (float32 and float16), with no option to skip it: most of CheXNet's conversion time
(bench/tensorflow_backend.py times both ways). No TFLite file is shipped, so the first
TFLite converter onnx2tf asks for *after* ``saved_model.pb`` exists ends the run; one asked
for before that (none is, in this version) is left alone.
Usage: ``python _tf_onnx2tf.py ONNX2TF_ARGS...`` (the ``onnx2tf`` command's arguments).
"""

import os
import sys


class _SavedModelWritten(BaseException):
    """Raised through onnx2tf (past its ``except Exception``) once the SavedModel exists."""


def _output_folder(argv):
    for flag in ("-o", "--output_folder_path"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            return argv[argv.index(flag) + 1]
    return "saved_model"  # onnx2tf's default


def main(argv):
    import tensorflow as tf
    from onnx2tf import main as onnx2tf_main

    folder = _output_folder(argv)
    converter = tf.lite.TFLiteConverter

    def stop_after_savedmodel(original):
        def replacement(*args, **kwargs):
            if os.path.isfile(os.path.join(folder, "saved_model.pb")):
                raise _SavedModelWritten
            return original(*args, **kwargs)

        return staticmethod(replacement)

    for name in ("from_keras_model", "from_concrete_functions", "from_saved_model"):
        setattr(converter, name, stop_after_savedmodel(getattr(converter, name)))
    sys.argv = ["onnx2tf", *argv]
    try:
        onnx2tf_main()
    except _SavedModelWritten:
        print("SavedModel written; TFLite conversion skipped (model_agnostic ships none)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
