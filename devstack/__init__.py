"""Development stack: local infrastructure for laptops, tests, benchmarks and the demo.

Not part of the data flow: the stages (``streaming``, ``trainers``, ``ranking``) and the
core never import it; only the command line (``learnrec``), the demo, the benchmarks and
the tests do. Production processes name their services by environment variables.
"""
