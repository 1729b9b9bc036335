# A local stand-in for the official rabbitmq:*-management image, built from Debian's own
# rabbitmq-server package, for machines that can reach Debian's mirror but no container
# registry (see .ci/container-engine.sh). It copies the official image's interface, not its
# contents: configuration in /etc/rabbitmq, the CLI tools on PATH, HOME holding the Erlang
# cookie, ENTRYPOINT docker-entrypoint.sh with CMD rabbitmq-server. Tag it with a local name,
# never an official one.
ARG BASE_IMAGE=localhost/debian-min:bookworm
FROM ${BASE_IMAGE}

# policy-rc.d stops the package's postinst from trying to start a broker during the build.
RUN set -eux; \
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
    chmod +x /usr/sbin/policy-rc.d; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server; \
    rm -rf /var/lib/apt/lists/*; \
    /usr/lib/rabbitmq/bin/rabbitmq-plugins enable --offline rabbitmq_management; \
    chmod 0644 /etc/rabbitmq/enabled_plugins; \
    rm -f /root/.erlang.cookie /var/lib/rabbitmq/.erlang.cookie

COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# As in the official image: let the default guest user log in through a published port, so
# that tools such as testcontainers' RabbitMqContainer work against this image unchanged.
COPY 10-defaults.conf /etc/rabbitmq/conf.d/10-defaults.conf

# The release scripts come first on PATH: Debian's /usr/sbin wrappers switch user and log to
# files, and run as root the server wrapper ignores SIGTERM (every stop waits out the timeout).
ENV PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/var/lib/rabbitmq \
    RABBITMQ_LOGS=- \
    LANG=C.UTF-8

# Running as rabbitmq means `docker exec ... rabbitmqctl` and the healthcheck read the same
# cookie the node wrote.
USER rabbitmq
WORKDIR /var/lib/rabbitmq
EXPOSE 4369 5672 15672 25672
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["rabbitmq-server"]
