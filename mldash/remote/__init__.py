"""Remote mode: the local-first uploader, the read client and `mldash sync`."""
