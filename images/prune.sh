#!/bin/sh
# Removes from an installed prefix (pip install --prefix DIR) what nothing imports at run
# time: the packages' own test suites (pandas' alone is 46 MB) and the kubernetes client's
# asyncio copy (kubernetes/aio, 68 MB: the operator uses the sync client, kopf its own
# aiohttp). The image test runs both images after this.
#   sh images/prune.sh /install
set -eu
for site in "$1"/lib/python3*/site-packages; do
    find "$site" -type d -name tests -prune -exec rm -rf {} +
    rm -rf "$site/kubernetes/aio"
done
