#!/bin/sh
# Installs the benchmark's peer: Debian's PyTorch on OpenBLAS (idempotent: does nothing when torch already imports
# and OpenBLAS backs it). Without libopenblas0-pthread Debian's torch falls back to reference BLAS (~7 GFLOP/s),
# which is not a fair peer.
set -e
PY=/usr/bin/python3
if $PY -c "import torch, numpy" >/dev/null 2>&1 && ls /usr/lib/*/openblas-pthread/libblas.so.3 >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "setup-peer: need root to apt-get install python3-torch libopenblas0-pthread" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q python3-torch python3-numpy libopenblas0-pthread >&2
$PY -c "import torch, numpy" >/dev/null
