#!/bin/sh
# A launcher as a non-Python program would have one: the harness starts this script.
cd "$(dirname "$0")" || exit 1
echo "starting the notification service on port 5003 (broker $RABBIT_HOST:$RABBIT_PORT)"
"${PYTHON:-python3}" notify.py
