"""Streaming prediction: a Redis Stream consumed in a consumer group, each entry predicted and its
prediction written to an output stream in the same atomic step as the entry's acknowledgement."""
