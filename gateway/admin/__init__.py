"""The admin API: the gRPC service (`service`) and its proto conversions (`convert`)."""
