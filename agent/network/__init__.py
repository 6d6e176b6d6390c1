"""Sessions' networking: a pool of per-session namespaces, routing and the firewall.

``addressing`` (names and addresses), ``links`` (netns and veth, pyroute2),
``netns`` (namespace chores), ``routing`` (policy routing out of the
uplink), ``firewall`` (nftables) and ``pool`` (the leases) each do one of
these.
"""
