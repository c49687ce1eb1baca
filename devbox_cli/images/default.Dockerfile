# The default devbox image: Debian with bash, curl and python3, run as an unprivileged user.
ARG BASE=devbox/base:bookworm
FROM ${BASE}
RUN useradd --create-home --uid 1000 --shell /bin/bash agent && mkdir -p /workspace \
 && chown agent:agent /workspace
WORKDIR /workspace
USER agent
CMD ["sleep", "infinity"]
