"""The guest side of every sandbox: a VM's init script and the in-sandbox agent.

The agent runs from the read-only bundle (``vmimages.bundle``: Debian's
Python, the standard library and msgpack), never on the image's files, so it
uses the standard library and msgpack only, and imports little: every import
is paid for at each cold boot, under TCG dearly. ``init.sh`` goes into each
VM image's initramfs. ``protocol`` is shared with the host, which imports it
from here.
"""
