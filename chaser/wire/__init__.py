"""What travels between the SDK, the scheduler and the agents, defined once.

The error JSON and its types, the endpoints' msgpack frames, the isolation
models (limits, egress), image references, browser work, and the agent API's
requests and answers. Each side validates with the same models, so a change
to the contract is one change. It lives in ``chaser`` because the SDK must
carry it and ``pip install chaser`` installs no server; it depends only on
pydantic and msgpack, so the servers import it without the rest of the SDK.
The sandbox channel's frames are not here: they are shipped into every
sandbox with the in-sandbox agent (``vmimages/guest/protocol.py``).
"""
