# A local stand-in for python:3.11-slim, built from Debian 12's python3 (3.11), for machines
# that reach Debian's mirror and PyPI but no container registry (.ci/container-engine.sh).
ARG BASE_IMAGE=localhost/debian-min:bookworm
FROM ${BASE_IMAGE}

# host-ca-bundle.crt is the CA bundle the building machine's own pip trusts: where outbound
# TLS is re-signed by a proxy, pip inside the build must trust the same authorities.
COPY host-ca-bundle.crt /etc/ssl/certs/host-ca-bundle.crt

RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3 python3-pip python3-venv; \
    rm -rf /var/lib/apt/lists/*; \
    ln -s /usr/bin/python3 /usr/local/bin/python

ENV PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt \
    LANG=C.UTF-8
CMD ["python3"]
