"""Applications on top of the library: the command line, the HTTP service, the demo."""
