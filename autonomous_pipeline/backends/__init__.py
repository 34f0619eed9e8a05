"""Agent and sandbox backends: everything that touches processes, git and the disk."""
