"""A gRPC inference gateway that serves Triton's `inference.GRPCInferenceService`."""
