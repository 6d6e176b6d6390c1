"""The agent's book of sandboxes and what it keeps about each one.

``manager`` creates (with full rollback), pauses, destroys and re-adopts
sandboxes; ``images`` says which images this host can start them from;
``leases`` and ``lease_keeper`` count and end the connections to them;
``detached`` runs commands that outlive their request; ``gitimport`` clones
a repository onto a new workspace disk in a throwaway sandbox.
"""
