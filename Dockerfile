# labbot in a container: the bot, its sandbox runtime and bubblewrap, running as the non-root
# user `labbot`. bubblewrap starts each sandbox in user namespaces of its own, which Docker's
# defaults refuse; run the image with the options in README.md ("Docker"), e.g.
#   docker run --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt systempaths=unconfined ...
# (compose.yaml sets them). scripts/test-container.sh builds this image and proves the sandbox
# starts and holds inside it.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap libseccomp2 fonts-wqy-zenhei make \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 labbot \
 && install -d -o labbot -g labbot /opt/labbot /data

# Set-up runs as `labbot`, which owns the checkout: it creates .venv, .tools and the sandbox
# runtime .runtime here, and the bot installs packages into that runtime later.
WORKDIR /opt/labbot
COPY --chown=labbot:labbot . .
USER labbot
ENV UV_PYTHON_DOWNLOADS=never \
    LABBOT_DATA_DIR=/data \
    PATH=/opt/labbot/.venv/bin:$PATH
RUN UV_NO_DEV=1 UV_NO_CACHE=1 scripts/setup.sh

VOLUME ["/data"]
CMD ["labbot", "run"]
