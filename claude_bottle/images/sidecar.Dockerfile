# One image for cred-proxy, git-gate and supervise: Debian's Python and git, and
# the project's own package. Nothing else: the sidecars are stdlib-only.
FROM debian:bookworm-slim
COPY ca-bundle.crt /tmp/ca-bundle.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 git openssh-client ca-certificates \
 && if [ -s /tmp/ca-bundle.crt ]; then cp /tmp/ca-bundle.crt /usr/local/share/ca-certificates/claude-bottle-extra.crt; fi \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/ca-bundle.crt
COPY claude_bottle /opt/claude-bottle/claude_bottle
ENV PYTHONPATH=/opt/claude-bottle PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
