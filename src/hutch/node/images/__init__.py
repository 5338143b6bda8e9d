"""OCI images: copy any supported source into a local layout (skopeo), read and check it,
and apply its layers safely to a directory."""
