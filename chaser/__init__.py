"""The Chaser SDK and CLI: ``chaser.client.Client``, the ``chaser`` command, and
``chaser.wire``, what travels between them, the scheduler and the agents.

Nothing here imports the servers (``agent``, ``scheduler``, ``serving``) but
``chaser up``, inside its command: ``pip install chaser`` runs without them.
"""
