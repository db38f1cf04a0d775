# The upbit-fanout image: the `upbit-fanout` command, running the collector by default.
#   docker build -t upbit-fanout .
#   docker run --rm -e UPBIT_FANOUT_REDIS_URL=redis://host:6379/0 upbit-fanout
#
# Two stages: the first builds the wheel from the sources (the same wheel `pip install
# upbit-fanout` gets), the second installs only that wheel and its runtime dependencies and runs
# as an unprivileged user. The base is pinned to a patch release and a Debian release.
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY subscriptions ./subscriptions
COPY collector ./collector
COPY client ./client
COPY emulator ./emulator
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin fanout

USER 10001:10001
# The console command is PID 1 (exec form, no shell in between), so `docker stop`'s SIGTERM
# reaches it: the collector stops cleanly (status "stopped", sockets closed, exit 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["upbit-fanout"]
CMD ["collector"]
