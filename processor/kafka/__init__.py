"""Everything that speaks the Kafka protocol: clients, the start-up check, the broker
watch, produce framing and publishing, and the adapters behind the engine's ports. The
only subpackage that imports aiokafka; every private aiokafka access is fenced in one module.
"""
