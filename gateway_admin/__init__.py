"""Generated code of the gateway admin API (proto/gateway_admin/admin.proto): `make proto`."""
