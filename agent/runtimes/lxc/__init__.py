"""The LXC runtime: sandboxes as unprivileged system containers."""
