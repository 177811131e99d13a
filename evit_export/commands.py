"""Placeholder for command modules registered by later parts."""
