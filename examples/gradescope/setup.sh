#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu).
# It installs RabbitMQ from Ubuntu's packages (the harness starts nodes of its own from its
# release script; the packaged service is never used) and the harness, shipped in the
# autograder zip as source/rabbit-lab (build the zip with make_zip.sh).
set -euo pipefail
ROOT=${AUTOGRADER_ROOT:-/autograder}

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server python3 python3-venv \
    python3-pip
# The packaged node would hold 5672 and epmd's 4369: the grades run nodes of their own.
systemctl disable --now rabbitmq-server 2>/dev/null || service rabbitmq-server stop || true

# The harness needs Python 3.11 or newer; older Ubuntu images get it as python3.11.
PY=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
    PY=python3.11
fi
"$PY" -m venv "$ROOT/venv"
"$ROOT/venv/bin/pip" install -q "$ROOT/source/rabbit-lab"
