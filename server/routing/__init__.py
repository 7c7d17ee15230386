"""Several nodes: who hosts which stage (leases), the shared stage log, and the relay between nodes.

It is called by the layers above (host, signalling); it never calls up except through the
interfaces in ``routing.ports`` that the host implements."""
