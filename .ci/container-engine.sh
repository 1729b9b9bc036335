#!/usr/bin/env bash
# Make a Docker-compatible engine available for the container tests, then print the
# environment that docker-py, testcontainers and docker-compose need, as `export` lines:
#
#     eval "$(bash .ci/container-engine.sh)"
#
# Where a Docker daemon already answers, it does nothing and prints nothing. Otherwise (the
# CI machines: Debian 12, root, no Docker daemon, no container registry, but Debian's mirror
# and PyPI) it stands podman in for Docker:
#   1. installs podman, runc, debootstrap and docker-compose from Debian when missing;
#   2. writes the containers.conf settings these sandboxes need;
#   3. builds local stand-in images (Debian base, RabbitMQ, Python 3.11), skipping any tag
#      that already exists: the official images cannot be pulled here;
#   4. serves podman's Docker API on a unix socket, reusing one that already answers;
#   5. without systemd, runs the containers' healthchecks itself (see run_healthchecks).
# A second run finds everything in place and takes a second or two.
#
# Everything but the export lines goes to stderr, so the output can be eval'ed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=${RABBIT_LAB_ENGINE_DIR:-/run/rabbit-lab}
SOCKET="$STATE_DIR/podman.sock"
DOCKER_HOST_URL="unix://$SOCKET"

BASE_TAG=localhost/debian-min:bookworm
# Debian 12 ships RabbitMQ 3.10; the tag says so, and is never an official image name.
RABBITMQ_TAG=localhost/rabbit-lab/rabbitmq-standin:3.10
PYTHON_TAG=localhost/rabbit-lab/python-standin:3.11

log() { printf 'container-engine: %s\n' "$*" >&2; }

timed() {
    # Run one step and say how long it took, so CI logs show where setup time goes.
    local start=$SECONDS
    "$@"
    log "$1: $((SECONDS - start)) s"
}

print_exports() {
    cat <<EOF
export DOCKER_HOST=$DOCKER_HOST_URL
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_CONNECTION_MODE=docker_host
export RABBITMQ_IMAGE=$RABBITMQ_TAG
export PYTHON_IMAGE=$PYTHON_TAG
EOF
}

socket_answers() {
    curl -fsS --max-time 2 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1
}

install_packages() {
    local missing=() pkg
    # dnsname lets containers on a compose network find each other by service name
    # (podman 4.3 on Debian uses CNI, which has no DNS without it).
    for pkg in podman runc debootstrap docker-compose curl \
        golang-github-containernetworking-plugin-dnsname; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >&2
    fi
}

configure_podman() {
    # Three limits of these sandboxes stop `podman run` until they are set:
    #  - crun cannot raise RLIMIT_NOFILE/RLIMIT_NPROC past the sandbox's hard limits
    #    ("setrlimit ... Operation not permitted"), so ask only for what we have;
    #  - crun rejects the hybrid cgroup layout ("cgroups in hybrid mode not supported"), so
    #    use runc, with the cgroupfs manager since there is no systemd to manage cgroups.
    local conf=/etc/containers/containers.conf nofile wanted
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited ]] && nofile=1048576
    wanted=$(cat <<EOF
# Written by rabbit-lab's .ci/container-engine.sh: limits of this sandbox (see there).
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
)
    if [[ ! -f $conf || $(cat "$conf") != "$wanted" ]]; then
        if [[ -f $conf ]] && ! grep -q "rabbit-lab" "$conf"; then
            cp "$conf" "$conf.before-rabbit-lab"
            log "kept the previous $conf as $conf.before-rabbit-lab"
        fi
        mkdir -p "$(dirname "$conf")"
        printf '%s\n' "$wanted" >"$conf"
        log "wrote $conf"
    fi
}

image_exists() { podman image exists "$1"; }

recipe_of() {
    # A digest of the files an image is built from: a stand-in is rebuilt when its recipe
    # changes, and only then.
    cat "$@" | sha256sum | cut -c1-16
}

image_is_current() {
    local tag=$1 recipe=$2 label='{{index .Labels "rabbit-lab.recipe"}}'
    image_exists "$tag" && [[ $(podman image inspect -f "$label" "$tag") == "$recipe" ]]
}

debian_mirror() {
    # The mirror apt already uses, so debootstrap needs no other network access.
    local uri
    uri=$(grep -hoE '^URIs: *http[^ ]*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | head -n1 | sed 's/^URIs: *//') || true
    if [[ -z $uri ]]; then
        uri=$(grep -hoE '^deb +http[^ ]*/debian/? +bookworm ' /etc/apt/sources.list 2>/dev/null \
            | head -n1 | awk '{print $2}') || true
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
    image_exists "$BASE_TAG" && return
    local rootfs mirror
    rootfs=$(mktemp -d /var/tmp/rabbit-lab-rootfs.XXXXXX)
    mirror=$(debian_mirror)
    log "debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
    # Updates and security fixes too, as on the host.
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian*}/debian-security bookworm-security main
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import - "$BASE_TAG" >&2
    rm -rf "$rootfs"
}

build_rabbitmq() {
    local dir="$REPO/docker/standin" recipe
    recipe=$(recipe_of "$dir/rabbitmq.Dockerfile" "$dir/docker-entrypoint.sh" \
        "$dir/10-defaults.conf")
    image_is_current "$RABBITMQ_TAG" "$recipe" && return
    log "building $RABBITMQ_TAG"
    podman build --quiet --build-arg "BASE_IMAGE=$BASE_TAG" --label "rabbit-lab.recipe=$recipe" \
        -t "$RABBITMQ_TAG" -f "$dir/rabbitmq.Dockerfile" "$dir" >&2
}

build_python() {
    local dockerfile="$REPO/docker/standin/python.Dockerfile" bundle recipe ctx
    # The CA bundle this machine's pip trusts (PIP_CERT), so pip inside builds does too.
    bundle=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
    recipe=$(recipe_of "$dockerfile" "$bundle")
    image_is_current "$PYTHON_TAG" "$recipe" && return
    log "building $PYTHON_TAG"
    ctx=$(mktemp -d /var/tmp/rabbit-lab-python.XXXXXX)
    cp "$bundle" "$ctx/host-ca-bundle.crt"
    cp "$dockerfile" "$ctx/Dockerfile"
    podman build --quiet --build-arg "BASE_IMAGE=$BASE_TAG" --label "rabbit-lab.recipe=$recipe" \
        -t "$PYTHON_TAG" "$ctx" >&2
    rm -rf "$ctx"
}

# A background process started from a clone that has since been deleted keeps a deleted
# working directory; podman's conmon inherits it and then fails every container start
# ("Failed to get working directory", "write child: broken pipe"), though the socket
# still answers. Such a process is stopped and started again, from /.
stale_pids() {
    local pid
    for pid in $(pgrep -f -- "$1"); do
        [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == *" (deleted)" ]] && echo "$pid"
    done
    return 0
}

stop_if_cwd_lost() {
    local pids i
    pids=$(stale_pids "$1")
    [[ -z $pids ]] && return 0
    log "$2 runs in a deleted directory (an earlier clone): restarting it"
    kill $pids 2>/dev/null || true
    for i in $(seq 1 50); do
        [[ -z $(stale_pids "$1") ]] && return 0
        sleep 0.1
    done
    kill -9 $(stale_pids "$1") 2>/dev/null || true
}

start_socket() {
    stop_if_cwd_lost "podman system service --time=0 $DOCKER_HOST_URL" "podman system service"
    socket_answers && return
    log "starting podman system service on $SOCKET"
    rm -f "$SOCKET"
    # setsid + nohup: the service must outlive this script and the shell that eval'ed it;
    # started from /, not from the clone, which may be deleted while it runs.
    # (`cd / && cmd &` would background the whole list: a shell holding this script's
    # stdout open for as long as the service runs, and `$(...)` would never return.)
    (cd / || exit 1
     setsid nohup podman system service --time=0 "$DOCKER_HOST_URL" \
        >"$STATE_DIR/podman-service.log" 2>&1 </dev/null &
     echo $! >"$STATE_DIR/podman-service.pid")
    local i
    for i in $(seq 1 100); do
        socket_answers && return
        sleep 0.1
    done
    log "podman system service did not answer on $SOCKET; see $STATE_DIR/podman-service.log"
    exit 1
}

run_healthchecks() {
    # podman schedules healthchecks with systemd timers. Without systemd (these sandboxes)
    # no check ever runs, every container stays "starting", and compose's
    # `condition: service_healthy` waits forever. A small loop stands in for the timers.
    [[ -d /run/systemd/system ]] && return
    local pidfile="$STATE_DIR/healthchecks.pid"
    stop_if_cwd_lost "podman healthcheck run" "the healthcheck loop"
    # Reuse a loop that still runs (checking its command line: a pid can be reused).
    if [[ -f $pidfile ]] && ps -p "$(cat "$pidfile")" -o args= 2>/dev/null \
        | grep -q 'podman healthcheck run'; then
        return
    fi
    log "starting the healthcheck loop (no systemd here to schedule podman's healthchecks)"
    (cd / || exit 1
     setsid nohup bash -c '
        while :; do
            # Containers that have a healthcheck show (starting), (healthy) or (unhealthy).
            for id in $(podman ps --format "{{.ID}} {{.Status}}" 2>/dev/null \
                        | awk "/\\((starting|healthy|unhealthy)\\)/ {print \$1}"); do
                podman healthcheck run "$id" >/dev/null 2>&1 &
            done
            wait
            sleep 2
        done' >"$STATE_DIR/healthchecks.log" 2>&1 </dev/null &
     echo $! >"$pidfile")
}

main() {
    # A daemon that answers is used as it is, unless it is our own podman socket from an
    # earlier run (then carry on, to check the images and restart what has stopped).
    if [[ ${DOCKER_HOST:-} != "$DOCKER_HOST_URL" ]] && command -v docker >/dev/null 2>&1 \
        && docker info >/dev/null 2>&1; then
        log "a Docker daemon answers; nothing to do"
        return
    fi
    if [[ $(id -u) != 0 ]]; then
        log "no Docker daemon, and standing podman in for one needs root"
        exit 1
    fi
    mkdir -p "$STATE_DIR"
    local step
    for step in install_packages configure_podman build_base build_rabbitmq build_python \
        start_socket run_healthchecks; do
        timed "$step"
    done
    print_exports
}

main "$@"
