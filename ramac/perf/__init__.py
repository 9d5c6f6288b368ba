"""The commands that measure speed: `ramac bench` (bench.py) and `ramac profile` (profile.py)."""
