"""Live-load balancing of a model's traffic over its replica groups (ARCHITECTURE.md,
"Live-load balancing").

Pure layer: `config` (what each model asks for), `load` (what the I/O loop observed,
what a policy decided), `policy` (the interface and registry), one module per policy,
and `gate` (when a decision is worth publishing). The loop that samples Envoy and the
engines and publishes route weights lives elsewhere and calls these.
"""
