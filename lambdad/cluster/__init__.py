"""Cluster mode: several lambdad nodes on one PostgreSQL (DESIGN "Many nodes").

Each node keeps two connections of its own beside the store's (`session`): one LISTENs
for changes other nodes announce, one carries its heartbeats and advisory locks. From
them: the nodes table and its heartbeats (`table`, `membership`), who is silent
(`liveness`, pure), who leads the singletons (`leadership`), and applying announced
changes to this node's routing and keys (`changes`). `wiring` builds it all, and
nothing of it on SQLite.
"""
