"""Ways samples get into collapsewatch; importable without the server extras."""
