"""Where drained events go: the EventSink protocol and its implementations."""
