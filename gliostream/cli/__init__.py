"""Click commands: parse options, call the pure core, report."""
