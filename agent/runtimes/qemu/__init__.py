"""The QEMU runtime: sandboxes as microVMs, each QEMU jailed, driven over QMP."""
