"""Remote diagnostics: the flight recorder, the diagnostics archive, its upload (GetLog /
GetDiagnostics) and `station report`. Protocol-neutral: the OCPP adapters only translate."""
