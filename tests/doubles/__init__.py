"""TEST DOUBLES: stand-ins for what no registry here can serve (pipelock's image)
and for what tests must not reach (the Anthropic API). Each is named so."""
