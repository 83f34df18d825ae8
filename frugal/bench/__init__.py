"""`frugal bench`: benchmarks that run the product's own stack on a simulated fleet.

Pure modules (plan, stats, trace, records, report, group_share, fleet) hold the maths and the
formatting; ports, machine, load, plots and routing do the I/O. baselines/ holds the gateways
`frugal bench compare` measures Frugal against, each run as its own process.
"""
