"""Train Digits on the bundled 8x8 digits, export it to ONNX, check both backends agree.

Steps, all on CPU and with no downloads:

1. split ``load_digits()`` 75/25 (stratified, ``random_state=0``) and save the test
   split as ``test_split.npz`` (numpy only, so evaluation needs neither sklearn nor torch);
2. train the CNN with fixed seeds on inputs made by this file's torch pipeline
   (``training_inputs``); save ``weights.safetensors``;
3. ``export_model``: export to ONNX, verify parity stage by stage on held-out test
   images (stage 1 compares the model's torch-free ``preprocessing`` with
   ``reference``, this file's training pipeline, named in config.toml's
   ``[verify] reference``), and write the checksummed artifact folder ``artifact/``
   (replacing the old one only after the new one passed);
4. classify the test split with PyTorch (weights reloaded from the file) and with the
   artifact on ONNX Runtime; exit 1 if any prediction differs.

    python examples/digits/train.py                        # writes next to this file
    python examples/digits/train.py --output-dir /tmp/d --epochs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: load_digits' pixel values run 0..16.
SCALE = 16


def training_inputs(images: Any) -> Any:
    """The training pipeline (torch): uint8 images (N, 8, 8) -> float32 (N, 1, 8, 8) in [0, 1]."""
    import torch

    return torch.as_tensor(np.asarray(images), dtype=torch.float32).div(SCALE).unsqueeze(1)


def reference(image: Any) -> Any:
    """One raw 8x8 image through the training pipeline: ``[verify] reference`` in config.toml."""
    return training_inputs(np.asarray(image)[None])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--output-dir", type=Path, default=HERE,
                        help="where weights.safetensors, test_split.npz and artifact/ go "
                        "(default: %(default)s, the shipped files)")
    parser.add_argument("--config", type=Path, default=HERE / "config.toml",
                        help="model config; its [pytorch] weights is replaced by the file "
                        "written here (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds init and shuffling (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 keeps the float sums in one order "
                        "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")

    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    from model_agnostic.config import load_config, load_model
    from model_agnostic.export.pipeline import export_model

    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    weights, split, artifact = out / "weights.safetensors", out / "test_split.npz", out / "artifact"
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)

    # 1. data ---------------------------------------------------------------------------
    digits = load_digits()
    images = digits.images.astype(np.uint8)  # integer counts 0..16 stored as float64
    assert np.array_equal(images, digits.images), "load_digits pixels are not whole numbers"
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.uint8), test_size=0.25, random_state=0,
        stratify=digits.target,
    )
    np.savez_compressed(split, X=x_test, y=y_test)
    print(f"data: {len(x_train)} training / {len(x_test)} test images of 8x8 "
          f"(saved the test split to {_show(split)})")

    # 2. training ----------------------------------------------------------------------
    cfg = load_config(args.config)
    untrained = _with_weights(cfg, None, seed=args.seed)
    # The network is trained right below, so the PyTorch backend's warning that it runs
    # on random weights does not apply here; silence it for this one construction.
    logger = logging.getLogger("model_agnostic.pytorch")
    level, logger.level = logger.level, logging.ERROR
    try:
        model: Any = load_model(untrained, backend="pytorch")
    finally:
        logger.setLevel(level)
    # Training inputs come from the training pipeline; verify checks the deployed,
    # torch-free preprocessing hook against it (stage 1).
    inputs = training_inputs(x_train)
    targets = torch.from_numpy(y_train.astype(np.int64))
    network = model.network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed)
    print(f"training {sum(p.numel() for p in network.parameters())} parameters for "
          f"{args.epochs} epochs (batch {args.batch_size}, Adam lr {args.lr:g}, "
          f"seed {args.seed}, {args.threads} thread(s))")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(inputs), generator=shuffle)
        total, correct = 0.0, 0
        for first in range(0, len(order), args.batch_size):
            batch = order[first:first + args.batch_size]
            logits = network(inputs[batch])
            loss = loss_fn(logits, targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            correct += int((logits.argmax(1) == targets[batch]).sum())
        if epoch == 1 or epoch == args.epochs or epoch % 5 == 0:
            print(f"  epoch {epoch:>3}: loss {total / len(inputs):.4f}, "
                  f"training accuracy {correct / len(inputs):.4f}")
    train_seconds = time.perf_counter() - start
    print(f"trained in {train_seconds:.2f} s")
    network.eval()
    save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()}, str(weights))
    weights.chmod(0o666 & ~_umask())  # safetensors writes the file private (0600)
    print(f"saved {_show(weights)} ({weights.stat().st_size / 1024:.1f} KiB)")

    # 3. export + verify + artifact ------------------------------------------------------
    trained = _with_weights(cfg, weights)
    samples = [x_test[np.flatnonzero(y_test == d)[0]] for d in range(10)]  # one of each digit
    # The first sample is passed as the example: export_model verifies [example, *samples],
    # so passing samples alone would check sample 0 twice. The artifact is built and
    # verified beside artifact/ and replaces it only if every stage passed.
    result = export_model(trained, artifact, example=samples[0], samples=samples[1:],
                          force=True, progress=lambda m: print(f"export: {m}"))
    print(result.report.summary())
    if result.artifact is None:
        print(f"parity {result.report.verdict.upper()}; artifact not written (the previous "
              f"{_show(artifact)} is untouched)", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in artifact.iterdir() if f.is_file())
    print(f"artifact: {_show(artifact)} ({size / 1024:.1f} KiB, "
          f"{', '.join(sorted(f.name for f in artifact.iterdir()))})")

    # 4. both backends on the whole test split -------------------------------------------
    on_torch = _predict(load_model(trained, backend="pytorch"), x_test)
    on_onnx = _predict(load_model(artifact), x_test)
    differ = int(np.sum(on_torch != on_onnx))
    for name, predicted in (("PyTorch", on_torch), ("ONNX Runtime", on_onnx)):
        right = int(np.sum(predicted == y_test))
        print(f"{name + ' test accuracy:':<27} {right / len(y_test):.4f} ({right}/{len(y_test)})")
    print(f"differing predictions:      {differ}")
    if differ:
        print("error: PyTorch and ONNX Runtime disagree on the test split", file=sys.stderr)
        return 1
    return 0


def _with_weights(cfg: Any, weights: Path | None, **extra: Any) -> Any:
    """``cfg`` with ``[pytorch] weights`` replaced (or removed) and extra [pytorch] keys."""
    pytorch = {k: v for k, v in cfg.sections.get("pytorch", {}).items() if k != "weights"}
    if weights is not None:
        pytorch["weights"] = str(weights)
    return dataclasses.replace(cfg, sections={**cfg.sections, "pytorch": {**pytorch, **extra}})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _predict(model: Any, images: np.ndarray) -> np.ndarray:
    return np.array([result["digit"] for result in model.predict_batch(list(images))])


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
