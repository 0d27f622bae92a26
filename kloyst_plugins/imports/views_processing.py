"""Processing-side views: PUT /imports/{id}/mapping, GET /imports/{id}/rejected.csv."""
