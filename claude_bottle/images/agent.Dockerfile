# The default agent image: Debian, Node.js, git and Claude Code from npm.
# ca-bundle.crt is the bottle's `ca_bundle` (empty when it has none): installed into
# the system store, and Node is pointed at that store, so TLS-intercepting proxies
# work for npm at build time and for the agent's own tools at run time.
FROM debian:bookworm-slim
COPY ca-bundle.crt /tmp/ca-bundle.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git nodejs npm \
 && if [ -s /tmp/ca-bundle.crt ]; then cp /tmp/ca-bundle.crt /usr/local/share/ca-certificates/claude-bottle-extra.crt; fi \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/ca-bundle.crt
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN npm install -g --no-fund --no-audit @anthropic-ai/claude-code \
 && npm cache clean --force \
 && claude --version
