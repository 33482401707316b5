"""The load and fault harness behind ``bench/run.py``: processes, load generation, scenarios."""
