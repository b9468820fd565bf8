"""The pieces both sides share: the record, priorities, filter specs, settings, the router, the ring and the text format."""
