"""claude-bottle: run Claude Code unattended in a Docker bottle whose every way out is a sidecar."""
