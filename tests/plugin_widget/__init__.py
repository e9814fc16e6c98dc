"""A third-party probe, as a plugin package would ship it: registered only through the
`clip_audit.probes` entry point (tests/test_plugin_probe.py installs one), never imported by
audit/ or reports/. Its metrics, row key and report partial are its own."""
