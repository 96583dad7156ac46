"""Pipeline configs shipped with edgepipe (the built-in demo)."""
