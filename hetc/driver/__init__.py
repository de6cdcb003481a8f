"""The driver: what wires the other parts together (hetc.compile and load,
the command line, the conformance runner, the compression options). Nothing
else in hetc imports it."""
