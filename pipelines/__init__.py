"""Jobs on top of the recsys library: the `recsys` command line and batch recommendation."""
