#!/usr/bin/env bash
# The one prepared command for the lent GPU machine, issues 15 and 26 (README: "On a lent GPU machine"):
#   bash bench/device_check.sh cuda                 # on the GPU machine, results under $OUT
#   bash bench/device_check.sh cpu --tiny --block-book-tools --block-absent   # the dry run here (make device-check-dry)
# Uses the machine's own python3 (PYTHON overrides), the checkout on PYTHONPATH, no download.
set -u
cd "$(dirname "$0")/.."
: "${OUT:=_build/device_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" -m bench.device_check --device "${1:-cuda}" --out "$OUT" "${@:2}"
