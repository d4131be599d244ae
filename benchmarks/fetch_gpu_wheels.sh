#!/usr/bin/env bash
# Downloads, into .whl/ at the repository root (git-ignored), the wheels that
# benchmarks/gpu.sh installs on a GPU machine with no network. That machine has Python 3.12
# with jax (CUDA), flax, optax, orbax-checkpoint, chex, absl-py, numpy, pillow, tqdm,
# tensorboard and protobuf, but not what a2i_jax imports beyond those:
#   ml_collections 1.1.0  (configs/; Requires-Dist: absl-py, PyYAML)
#   tensorboardX 2.6.5    (a2i_jax/metrics.py; Requires-Dist: numpy, packaging, protobuf>=3.20)
# PyYAML (a flax dependency) and packaging (a tensorboard dependency) should be there already;
# their wheels come along in case, and gpu.sh installs them only if the import fails.
#
#   bash benchmarks/fetch_gpu_wheels.sh        # then carry .whl/ to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
for spec in ml_collections==1.1.0 tensorboardX==2.6.5 PyYAML==6.0.3 packaging==25.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d .whl "$spec"
done
ls -l .whl
