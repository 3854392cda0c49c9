# syntax=docker/dockerfile:1
# One graphrun image for every agent and every node, amd64 and arm64 alike:
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/graphrun:0.1.0 --push .
# Each container runs one agent of a graph: `graphrun agent /graph/GRAPH.yaml AGENT`
# (see deploy/README.md and `graphrun compose`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- wheels: graphrun and every dependency, built where a compiler is at hand -------------
FROM ${PYTHON_IMAGE} AS wheels
# A compiler only for dependencies without a wheel for the target architecture; whichever
# version the distribution ships will do, as nothing compiled here reaches the final image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[all]"

# --- runtime: the wheels installed, no compiler, not root ---------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="graphrun" \
      org.opencontainers.image.description="A runtime for industrial edge-AI process graphs: agents, typed ports and Redis Streams." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Versions are those the wheel stage resolved; the wheels are mounted, not copied in.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "graphrun[all]"

# Cameras on USB or CSI are reachable by the video group.
RUN useradd --system --uid 10001 --user-group --create-home --groups video graphrun
USER 10001
WORKDIR /home/graphrun

# Healthy while the agent's heartbeat is fresh and says "running", as `graphrun status`
# shows it. `graphrun compose` gives each service this check with its own graph file and
# agent; a container started by hand names them in GRAPHRUN_GRAPH and GRAPHRUN_AGENT
# (and GRAPHRUN_REPLICA), and one that names no agent has nothing to check.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "[ -z \"$GRAPHRUN_AGENT\" ] || exec graphrun status \"$GRAPHRUN_GRAPH\" --agent \"$GRAPHRUN_AGENT\" ${GRAPHRUN_REPLICA:+--replica \"$GRAPHRUN_REPLICA\"} --check"]

ENTRYPOINT ["graphrun"]
CMD ["--help"]
