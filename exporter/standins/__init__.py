"""Gateway stand-ins: a simulated gateway (demo, tests, benchmarks) and a misbehaving one."""
