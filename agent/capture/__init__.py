"""Kernel capture: the BPF loader, the ring-buffer drain and the wire decoder.

Nothing here maps, hashes or writes files: the drain only decodes, so the
kernel's ring buffer is emptied as fast as Python allows.
"""
