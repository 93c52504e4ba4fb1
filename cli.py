#!/usr/bin/env python3
"""claude-bottle: run Claude Code unattended in a Docker bottle."""

import sys

from claude_bottle.cli import main

if __name__ == "__main__":
    sys.exit(main())
