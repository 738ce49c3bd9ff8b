"""One route module per resource; each is a thin adapter over a service."""
