"""Neural building blocks shared by the torch model families."""
