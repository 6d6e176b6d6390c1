"""What sandboxes keep on the host's disks: workspace disks, scratch layers, id-shifted trees.

``pool`` (the storage pool's files), ``disks`` (workspace disks and who holds
them), ``mounts`` (loop mounts, freezing), ``scratch`` (each sandbox's capped
writable layer) and ``idmap`` (the containers' host id range) each do one of
these.
"""
