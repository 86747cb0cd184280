#!/usr/bin/env bash
# The wheels device/campaign.sh installs on a bare GPU machine (Python 3.12, x86-64; it has torch,
# lightning and torchmetrics), at the versions of constraints.txt, into .whl (git-ignored: name it
# in the device tool's carry). Run where pip can download.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
pin() { grep -i "^$1==" constraints.txt | head -1; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "$(pin hydra-core)" "$(pin omegaconf)"
# antlr4-python3-runtime has no wheel on PyPI: build it (pure Python)
python3 -m pip wheel -q --no-deps -w .whl "$(pin antlr4-python3-runtime)"
ls -l .whl
