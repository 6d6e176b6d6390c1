"""Session endpoints: what a client reaches in a sandbox through the edge router.

``dispatch`` routes them ahead of the Quart API app over bare ASGI
(``asgi``), where Quart would buffer: terminals (``pty`` around the
``pty_mux`` protocol core), streaming exec, files, a raw TCP tunnel, and,
as bytes from the front, ports and a browser's DevTools (``cdp_proxy``).
``connections`` ends a sandbox's leases and terminals as one;
``failures`` turns runtime failures into API errors for all of them.
"""
