# One image for every hookfleet role: `docker run hookfleet dispatcher|retry-scheduler|recorder|api|...`.
# Build from the repository root: docker build -t hookfleet .
# BASE_IMAGE: any Debian-like image with Python 3.11 as `python` and its venv module; default the public
# python:3.11-slim (deploy/podman/containers.sh builds a stand-in from Debian's python3.11 where no
# registry can be reached). The tag alone can move: for a build that cannot change under you, pin the
# base by digest, e.g. --build-arg BASE_IMAGE=python:3.11-slim@sha256:<digest> (the digest you have
# checked; `docker buildx imagetools inspect python:3.11-slim` prints the current one).
# Python packages come from requirements.lock (exact versions and sha256 of every file, `make lock`).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/hookfleet
WORKDIR /src
COPY requirements.lock ./
RUN /opt/hookfleet/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY hookfleet/ hookfleet/
COPY devstack/ devstack/
COPY schemas/ schemas/
COPY producer/ producer/
COPY delivery/ delivery/
COPY dispatcher/ dispatcher/
COPY retry_scheduler/ retry_scheduler/
COPY recorder/ recorder/
COPY api/ api/
COPY demo/ demo/
# confluent-kafka, psycopg[binary] and pyreqwest ship manylinux wheels (librdkafka, libpq, the Rust HTTP client
# built in): no compiler needed.
RUN /opt/hookfleet/bin/pip install --no-deps --no-build-isolation . && /opt/hookfleet/bin/hookfleet --help >/dev/null

FROM ${BASE_IMAGE}
# Non-root; HOOKFLEET_HOME exists and is owned by the user so a volume mounted there inherits that owner.
RUN groupadd --system --gid 10001 hookfleet \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/hookfleet hookfleet \
    && install -d -o hookfleet -g hookfleet -m 0700 /home/hookfleet/.hookfleet
COPY --from=build /opt/hookfleet /opt/hookfleet
ENV PATH=/opt/hookfleet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOOKFLEET_HOME=/home/hookfleet/.hookfleet \
    HOOKFLEET_METRICS_PORT=9100
USER 10001:10001
WORKDIR /home/hookfleet
# 8080: the API (HOOKFLEET_PORT); 9100: /metrics and /healthz of every role (HOOKFLEET_METRICS_PORT).
EXPOSE 8080 9100
ENTRYPOINT ["hookfleet"]
CMD ["--help"]
