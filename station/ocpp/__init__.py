"""OCPP: the CSMS connection, both versions, the strict RPC layer."""

from station.ocpp.jsonschema_on_demand import install as _install_jsonschema_on_demand

_install_jsonschema_on_demand()  # before anything imports ocpp.messages (see that module)
