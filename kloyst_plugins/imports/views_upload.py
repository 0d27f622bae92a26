"""Upload-side views: POST /imports, GET /imports, GET /imports/{id}, POST /imports/{id}/cancel."""
