"""The node's transparent egress filter for domain rules (ADR 0022, docs/network.md).

``sniff`` reads the hostname out of a connection's first bytes (TLS SNI, HTTP Host),
``resolver`` asks the node's resolver for its addresses, ``proxy`` is the asyncio server
the nft dstnat sends a sandbox's TCP to 80/443 to.
"""
