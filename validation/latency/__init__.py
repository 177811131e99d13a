"""Latency: measured on this machine or a remote device, and simulated from device profiles."""
