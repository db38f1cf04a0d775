# The upbit-fanout image: the `upbit-fanout` command, running the collector by default.
#   docker build -t upbit-fanout .
#   docker run --rm -e UPBIT_FANOUT_REDIS_URL=redis://host:6379/0 upbit-fanout
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY upbit_fanout ./upbit_fanout
COPY subscriptions ./subscriptions
COPY collector ./collector
COPY client ./client
COPY emulator ./emulator
RUN pip install . && rm -rf /app/build

USER nobody
# SIGTERM stops the collector cleanly (status "stopped", sockets closed, exit 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["upbit-fanout"]
CMD ["collector"]
