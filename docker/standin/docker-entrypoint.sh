#!/bin/sh
# Entry point of the Debian RabbitMQ stand-in image: same contract as the official image's.
set -eu
# With this set, the rabbitmq-server script execs the Erlang VM instead of supervising it
# from a shell, so the node is PID 1 and receives docker stop's SIGTERM itself.
export RUNNING_UNDER_SYSTEMD=true
exec "$@"
