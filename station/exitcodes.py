"""Process exit codes, shared by `station run`, `station --once` and the tooling that reads them."""

OK = 0
FAILURE = 1  # unexpected internal error (a bug: please report with the log)
USAGE = 2  # wrong command-line arguments
CSMS_UNREACHABLE = 3  # CSMS unreachable or refused the connection / BootNotification
AUTH_FAILED = 4  # CSMS rejected the station's credentials (HTTP 401/403)
ESP32_UNREACHABLE = 5  # no valid status frame from the ESP32 charge controller
DEGRADED = 6  # a check failed but the station can charge
DAEMON_UNAVAILABLE = 7  # `station status`: the daemon's IPC socket does not answer
CANNOT_LISTEN = 69  # a tool cannot listen or create its device link: port taken, no permission (EX_UNAVAILABLE)
ALREADY_RUNNING = 75  # `station run`: another daemon holds the state directory or answers on the socket (EX_TEMPFAIL)
CONFIG = 78  # configuration missing or invalid (EX_CONFIG)

DESCRIPTIONS = {
    OK: "healthy",
    FAILURE: "internal error",
    USAGE: "usage error",
    CSMS_UNREACHABLE: "CSMS unreachable or refused",
    AUTH_FAILED: "CSMS authentication failed",
    ESP32_UNREACHABLE: "ESP32 charge controller unreachable",
    DEGRADED: "degraded: a check failed but the station can charge",
    DAEMON_UNAVAILABLE: "station daemon not running",
    CANNOT_LISTEN: "cannot listen on the port or create the socket / device link",
    ALREADY_RUNNING: "another station daemon already runs (same state directory or IPC socket)",
    CONFIG: "configuration error",
}
