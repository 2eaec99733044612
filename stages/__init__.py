"""DVC stages: each `python -m stages.<name>` loads params.yaml, calls one function, writes its outputs."""
