"""The scheduler's domain without I/O: its state machines, which the store's guarded updates derive from."""
