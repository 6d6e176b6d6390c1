"""What the two servers (agent, scheduler) share and the SDK does not need.

The HTTP front (hypercorn plus the raw route that relays upgraded
connections), the byte relay, the Quart JSON glue, signals, structured logs
and the typed settings base. It lives apart from ``chaser`` so that
``pip install chaser`` gives a client without the servers' dependencies.
"""
