"""The operator's command line (``hutch ...``): thin, over the client and the roles."""
