"""What the gateway is told: the YAML schema (`schema`), the `serve` flags over it (`flags`), each
route's cache and batching policy (`policies`), what crosses into the core (`boundary`), hot
reload (`reload`) and TLS credentials (`tls`)."""
