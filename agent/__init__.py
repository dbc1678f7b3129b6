"""tracehound: an eBPF capture agent that knows, and can prove, what happened on a host."""

__version__ = "0.1.0"
