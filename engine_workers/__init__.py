"""Frugal engine workers: gRPC `frugal.v1.Inference` servers in front of an engine backend.

Layers, outermost first: `__main__` (wiring) -> `server` (gRPC + health + metrics I/O) ->
`servicer` (proto <-> domain conversion, the one place errors become gRPC status) -> `core`
(validation, timing, metrics) -> `engine` protocol, implemented by the registered `backends`.
"""
