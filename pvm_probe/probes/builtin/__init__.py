"""The built-in probes of the runner (`pvm_probe.registry.PROBES`): attention mass, LogitLens and tuned lens,
PVM's gates and retrieval. Each is one module implementing `pvm_probe.probes.protocol.Probe`."""
