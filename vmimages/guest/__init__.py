"""The guest side of a microVM: its init script and the guest agent.

Everything in this folder is copied into each VM image's initramfs and runs
inside the VM on the image's own ``python3`` (plus Debian's python3-msgpack,
shipped beside it), so it uses the standard library and msgpack only, and
imports little: every import is paid for at each cold boot, under TCG dearly.
``protocol`` is shared with the host, which imports it from here.
"""
