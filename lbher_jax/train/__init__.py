"""Training library: losses, device mesh, state and jitted steps (the loop and checkpoints build on
them). Knows no corpora."""
