"""Object storage backends for media (the `ObjectStore` port of core/objects.py): `local` (a
directory served by the server's own media HTTP port, `http`) and `s3` (S3-compatible
storage). This layer imports the domain only; app.py picks the backend from `[media]`."""
