"""The status report rendered: text, the --check line, --json and OpenMetrics, each apart from the measure (``archive.status``)."""
