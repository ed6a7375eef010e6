"""Optional parts of the training module, switched on by what the loss head declares."""
