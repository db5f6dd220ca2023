#!/bin/sh
# Removes from an installed prefix (pip install --prefix DIR) what nothing imports at run
# time: the packages' own test suites (pandas' alone is 46 MB), the kubernetes client's
# asyncio copy (kubernetes/aio, 68 MB: the operator uses the sync client, kopf its own
# aiohttp), TensorFlow's C++ headers (tensorflow/include, 287 MB: for building custom
# ops) and libclang (62 MB: a requirement of TensorFlow's source tooling; nothing imports
# clang). The image test (make image-test) runs both images after this.
#   sh images/prune.sh /install
set -eu
for site in "$1"/lib/python3*/site-packages; do
    find "$site" -type d -name tests -prune -exec rm -rf {} +
    rm -rf "$site/kubernetes/aio" "$site/tensorflow/include" "$site/clang" \
        "$site"/libclang-*.dist-info
done
