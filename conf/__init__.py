# Makes conf/ importable as `denselab.conf` (see pyproject.toml), so Hydra finds these files
# through `pkg://denselab.conf` from a checkout and from an installed wheel alike.
