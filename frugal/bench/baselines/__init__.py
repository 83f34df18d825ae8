"""The gateways `frugal bench compare` measures Frugal against, shipped with the package.

Each runs as its own process (`python -m frugal.bench.baselines.<name>`) in front of the same
engine workers as Frugal; none of them is part of Frugal's request path.
"""
