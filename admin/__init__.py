"""The HTTP side of the broker: the REST API (Confluent REST Proxy v3 shapes), health and
readiness, served by Hypercorn on trio inside the broker process. Calls broker services,
never storage; nothing imports this package (it is started through the
`lodestream.services` entry point)."""
