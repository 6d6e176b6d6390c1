"""The agent API, spoken by the scheduler and only by it (the cluster token).

``api`` (host, sandboxes, exec), ``browser_api``, ``detached_api`` and
``disk_api`` parse with the wire's models and call the sandbox book;
``registration`` is the other direction, the heartbeat to the scheduler.
"""
