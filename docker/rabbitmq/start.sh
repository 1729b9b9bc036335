#!/bin/sh
# Start RabbitMQ with the lab topology and a login taken from the environment.
#
# Why a wrapper: importing definitions at boot makes RabbitMQ (3.x and 4.x alike) skip
# creating its default user ("Will not seed default virtual host and user: have definitions
# to load"), so RABBITMQ_DEFAULT_USER/PASS would be silently ignored. Putting the user in the
# committed definitions would put a password in git. Instead this script writes a second,
# throw-away definitions file inside the container from the environment, next to a copy of
# the committed topology, and rabbitmq.conf imports that folder.
#
# It works in the official image (runs as root, then its docker-entrypoint.sh drops to the
# rabbitmq user) and in the Debian stand-in (runs as rabbitmq; its entrypoint just execs).
set -eu

: "${RABBITMQ_DEFAULT_USER:?is not set: copy .env.example to .env}"
: "${RABBITMQ_DEFAULT_PASS:?is not set: copy .env.example to .env}"

# Overridable only so that tests can run this script outside a container.
src=${RABBIT_LAB_CONFIG_DIR:-/etc/rabbitmq/rabbit-lab}
dest=${RABBIT_LAB_DEFINITIONS_DIR:-/tmp/rabbit-lab-definitions} # load_definitions in rabbitmq.conf

# The queue type is part of each queue's identity: the broker must create the same type the
# services declare, or their queue_declare fails with PRECONDITION_FAILED.
case "${LAB_QUEUE_TYPE:-classic}" in
    classic) topology="$src/definitions.json" ;;
    quorum) topology="$src/definitions-quorum.json" ;;
    *)
        echo "start.sh: LAB_QUEUE_TYPE must be classic or quorum, not '$LAB_QUEUE_TYPE'" >&2
        exit 64
        ;;
esac

# A node of the `cluster` profile: all nodes need the same Erlang cookie, given by .env (a
# secret, so it is never committed). The image reads it from the rabbitmq user's HOME.
if [ -n "${RABBIT_LAB_CLUSTER:-}" ]; then
    : "${LAB_ERLANG_COOKIE:?is not set: the cluster profile needs it in .env (a long random string)}"
    cookie=${RABBIT_LAB_COOKIE_FILE:-/var/lib/rabbitmq/.erlang.cookie}
    rm -f "$cookie"
    (umask 077 && printf '%s' "$LAB_ERLANG_COOKIE" >"$cookie")
    chmod 400 "$cookie"
    if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
        chown rabbitmq:rabbitmq "$cookie"
    fi
fi

json_string() {
    # Escape backslashes and double quotes so any password survives as a JSON string.
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}
user=$(json_string "$RABBITMQ_DEFAULT_USER")
pass=$(json_string "$RABBITMQ_DEFAULT_PASS")

umask 077 # the user file holds a plain-text password: readable by its owner only
rm -rf "$dest"
mkdir -p "$dest"
cp "$topology" "$dest/00-topology.json"
cat >"$dest/10-user.json" <<JSON
{
  "users": [{"name": "$user", "password": "$pass", "tags": "administrator"}],
  "permissions": [
    {"user": "$user", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
  ]
}
JSON
if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    chown -R rabbitmq:rabbitmq "$dest" # the node reads it after dropping to this user
fi

# Both images provide docker-entrypoint.sh; with "rabbitmq-server" it starts the node in the
# foreground as the rabbitmq user, so the node gets docker stop's SIGTERM directly.
exec docker-entrypoint.sh rabbitmq-server
