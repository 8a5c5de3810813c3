// Module Dataplane.
