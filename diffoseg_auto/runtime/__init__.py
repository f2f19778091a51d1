"""Where and how tensors run: device choice, mixed precision, torch.compile (shared by every command)."""
