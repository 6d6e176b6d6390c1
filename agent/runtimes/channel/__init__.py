"""The host end of the sandbox channel, the one protocol both runtimes speak.

A container's channel is a unix socket into its network namespace, a VM's
a virtio-serial port; past that, the in-sandbox agent, its frames (checked
as hostile input), the outbox and the session endpoints over it are the same.
"""
