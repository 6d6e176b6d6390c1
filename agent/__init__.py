"""The host agent: one per host, root, everything on its host.

Its rooms: ``http`` (the agent API the scheduler calls), ``endpoints``
(session endpoints), ``sandboxes`` (the sandbox book), ``runtimes`` (lxc,
qemu, and the sandbox channel both speak), ``network``, ``storage``,
``browser`` and ``registry``; ``main`` builds them, ``config`` configures them.
"""
