"""The status report rendered: text, the --check line, --json and OpenMetrics.

Each apart from the measure (``archive.status``).
"""
