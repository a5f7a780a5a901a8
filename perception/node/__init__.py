"""The node: core (node.py), configuration, health, message filling, and the process wrapper."""
