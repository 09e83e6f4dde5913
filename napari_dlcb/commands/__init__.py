"""CLI sub-commands, one module per task (no Qt; heavy imports inside handlers)."""
