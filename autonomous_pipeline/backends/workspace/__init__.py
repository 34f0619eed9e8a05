"""Host-side git bookkeeping, shared by every sandbox.

The pipeline's own clone of the user's repository, a worktree and branch per task, committing what
an agent left, conflicts and merges all happen here, on the worker, never inside a sandbox: an
agent only ever sees its task's checkout.
"""
