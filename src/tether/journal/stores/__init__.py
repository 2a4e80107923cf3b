"""Store backends, one module each: `memory`, `sqlite` (and `postgres` for scale-out)."""
