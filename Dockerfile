# labbot in a container: the bot, its sandbox runtime and bubblewrap, running as a non-root user.
#
# The sandbox needs user namespaces inside the container. Docker's default seccomp and AppArmor
# profiles refuse them, so run with:
#   --security-opt seccomp=unconfined --security-opt apparmor=unconfined
# (compose.yaml does). bubblewrap then adds its own seccomp filter around user code. Without
# cgroup delegation the sandbox caps memory with an address-space limit instead of a cgroup.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap libseccomp2 fonts-wqy-zenhei make \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 labbot

WORKDIR /opt/labbot
COPY --chown=labbot:labbot . .
USER labbot
ENV UV_PYTHON_DOWNLOADS=never \
    LABBOT_DATA_DIR=/data \
    PATH=/opt/labbot/.venv/bin:$PATH
RUN scripts/setup.sh

VOLUME ["/data"]
CMD ["labbot", "run"]
