"""Pure building blocks shared by every layer: errors, settings, names, wire schemas."""
