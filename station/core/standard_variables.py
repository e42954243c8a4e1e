"""The variables every station declares: OCPP 2.0.1's required ones for the controllers it has,
the station's own facts, and the OCPP 1.6 configuration keys (mapped onto the same variables).

Data only; behaviour is bound by its owner (`DeviceModel.bind`): the core binds availability and
clock, the OCPP client the communication settings, the daemon the hardware facts. A variable
whose behaviour comes with a later feature is declared here with its spec default and
`owner_required=True` (writes refused until that feature binds it). Defaults that come from the
station's configuration file are set with `DeviceModel.set_default` at start.
"""

from __future__ import annotations

from station.core.authorization import CACHE_MAX_ENTRIES
from station.core.charging_profiles import MAX_PERIODS, MAX_PROFILES, MAX_STACK_LEVEL
from station.core.device_model import Attribute, AttributeType, DataType, Variable
from station.core.device_model import Mutability as M
from station.core.device_model import Scope

B, I, D, S = DataType.BOOLEAN, DataType.INTEGER, DataType.DECIMAL, DataType.STRING
OPTION, MEMBERS, SEQUENCE, TIME = DataType.OPTION_LIST, DataType.MEMBER_LIST, DataType.SEQUENCE_LIST, DataType.DATETIME
RO, RW = M.READ_ONLY, M.READ_WRITE

AVAILABILITY = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import", "Voltage", "Frequency")
"""What `station.ocpp.meter_values` can send (the meter's registers)."""
SAMPLED = "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage,Frequency"
TX_POINTS = ("ParkingBayOccupancy", "EVConnected", "Authorized", "DataSigned", "PowerPathClosed", "EnergyTransfer")
FEATURE_PROFILES_16 = "Core,FirmwareManagement,LocalAuthListManagement,RemoteTrigger,SmartCharging,Reservation"
FREE_VEND_ID_TAG = "FreeVend"
"""1.6 requires an idTag in StartTransaction; a transaction started before any token (2.0.1
TxStartPoint EVConnected) is sent with this one, as 1.6 stations do in free-vend mode."""
MESSAGE_LIMITS = {"GetReport": (100, 65536), "GetVariables": (50, 65536), "SetVariables": (50, 65536)}
"""DeviceDataCtrlr ItemsPerMessage / BytesPerMessage per message: (items, bytes)."""

STATION = (
    Variable("ChargingStation", "AvailabilityState", OPTION, values_list=AVAILABILITY, supports_monitoring=True,
             description="Available unless every EVSE is unavailable or faulted"),
    Variable("ChargingStation", "Available", B, default=True),
    Variable("ChargingStation", "Problem", B, default=False, supports_monitoring=True,
             description="true while a connector is faulted"),
    Variable("ChargingStation", "SupplyPhases", I, default=3),
    Variable("ChargingStation", "Model", S, default="AC22"),
    Variable("ChargingStation", "VendorName", S, default="Orge"),
    Variable("ChargingStation", "SerialNumber", S, default=""),
    Variable("ChargingStation", "FirmwareVersion", S, default="", description="the station software's version"),
    Variable("ChargingStation", "NumberOfConnectors", I, key16="NumberOfConnectors", only16=True),
    Variable("ChargingStation", "ConnectorPhaseRotation", S, RW, default="0.RST", max_limit=500,
             key16="ConnectorPhaseRotation", only16=True, description="as wired by the installer (informative)"),
)

EVSE = (
    Variable("EVSE", "AvailabilityState", OPTION, values_list=AVAILABILITY, scope=Scope.EVSE, supports_monitoring=True),
    Variable("EVSE", "Available", B, default=True, scope=Scope.EVSE),
    Variable("EVSE", "Problem", B, default=False, scope=Scope.EVSE, supports_monitoring=True),
    Variable("EVSE", "Power", D, scope=Scope.EVSE, unit="W", supports_monitoring=True,
             extra=(Attribute(AttributeType.MAX_SET),), description="Actual: metered power; MaxSet: the hardware limit"),
    Variable("EVSE", "SupplyPhases", I, default=3, scope=Scope.EVSE),
    Variable("Connector", "AvailabilityState", OPTION, values_list=AVAILABILITY, scope=Scope.CONNECTOR,
             supports_monitoring=True),
    Variable("Connector", "Available", B, default=True, scope=Scope.CONNECTOR),
    Variable("Connector", "ConnectorType", S, default="sType2", scope=Scope.CONNECTOR),
    Variable("Connector", "SupplyPhases", I, default=3, scope=Scope.CONNECTOR),
    Variable("CPPWMController", "FirmwareVersion", S, default="", scope=Scope.EVSE,
             description="the ESP32 charge controller's firmware (empty until it answered)"),
    Variable("CPPWMController", "Problem", B, default=False, scope=Scope.EVSE, supports_monitoring=True,
             description="true while the ESP32 link is down"),
    Variable("FiscalMetering", "Model", S, default=""),
    Variable("FiscalMetering", "SerialNumber", S, default="", description="not read from the meter yet"),
    Variable("FiscalMetering", "Problem", B, default=False, supports_monitoring=True,
             description="true while the energy meter does not answer"),
)

OCPP_COMM = (
    Variable("OCPPCommCtrlr", "HeartbeatInterval", I, RW, default=300, unit="s", min_limit=1, max_limit=86400,
             key16="HeartbeatInterval", store_key="ocpp:HeartbeatInterval"),
    Variable("OCPPCommCtrlr", "MessageTimeout", I, instance="Default", default=30, unit="s"),
    Variable("OCPPCommCtrlr", "MessageAttempts", I, RW, instance="TransactionEvent", default=3, min_limit=1, max_limit=100,
             key16="TransactionMessageAttempts", store_key="ocpp:TransactionMessageAttempts"),
    Variable("OCPPCommCtrlr", "MessageAttemptInterval", I, RW, instance="TransactionEvent", default=60, unit="s",
             min_limit=0, max_limit=86400, key16="TransactionMessageRetryInterval",
             store_key="ocpp:TransactionMessageRetryInterval"),
    Variable("OCPPCommCtrlr", "NetworkConfigurationPriority", SEQUENCE, RW, default="0", reboot_required=True,
             owner_required=True, owner_stores=True, values_list=("0", "1", "2", "3"),  # station.network_profiles.SLOTS
             description="network profile slots in the order they are tried (kept with the profiles)"),
    Variable("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", I, RW, default=3, min_limit=1, max_limit=100,
             store_key="ocpp:NetworkProfileConnectionAttempts",
             description="failed connections before the next profile is tried"),
    Variable("OCPPCommCtrlr", "OfflineThreshold", I, RW, default=60, unit="s", min_limit=0, owner_required=True),
    Variable("OCPPCommCtrlr", "ResetRetries", I, RW, default=0, min_limit=0, max_limit=10, key16="ResetRetries",
             description="a failed reset is not retried by this station: any value is kept for the CSMS"),
    Variable("OCPPCommCtrlr", "RetryBackOffRandomRange", I, RW, default=59, unit="s", min_limit=0, owner_required=True,
             description="the reconnect backoff (STATION_BACKOFF_MIN/MAX_SECONDS) as OCPP names it"),
    Variable("OCPPCommCtrlr", "RetryBackOffRepeatTimes", I, RW, default=6, min_limit=0, owner_required=True),
    Variable("OCPPCommCtrlr", "RetryBackOffWaitMinimum", I, RW, default=1, unit="s", min_limit=0, owner_required=True),
    Variable("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", B, default=True, key16="UnlockConnectorOnEVSideDisconnect",
             description="the ESP32 releases the lock itself when the cable leaves the car"),
    Variable("OCPPCommCtrlr", "WebSocketPingInterval", I, RW, default=20, unit="s", min_limit=0, max_limit=3600,
             key16="WebSocketPingInterval", store_key="ocpp:WebSocketPingInterval", owner_required=True,
             description="0 = no pings"),
    Variable("OCPPCommCtrlr", "FileTransferProtocols", MEMBERS, default="HTTP,HTTPS",
             values_list=("FTP", "FTPS", "HTTP", "HTTPS", "SFTP")),
    Variable("OCPPCommCtrlr", "SupportedFeatureProfiles", S, default=FEATURE_PROFILES_16,
             key16="SupportedFeatureProfiles", only16=True),
)

SECURITY = (  # A01-A05; owned by the OCPP client's credentials (station.trust.credentials)
    Variable("SecurityCtrlr", "Identity", S, max_limit=48, key16="ChargePointId"),
    Variable("SecurityCtrlr", "SecurityProfile", I, RW, min_limit=0, max_limit=3, key16="SecurityProfile",
             owner_required=True, owner_stores=True, description="can only be raised (A05)"),
    Variable("SecurityCtrlr", "BasicAuthPassword", S, RW, secret=True, min_limit=16, max_limit=40,
             key16="AuthorizationKey", owner_required=True, owner_stores=True,
             description="kept 0600 by the station's credentials, tried on a reconnect"),
    Variable("SecurityCtrlr", "OrganizationName", S, RW, default="", max_limit=64, key16="CpoName",
             store_key="ocpp:CpoName", description="O of the station's CSR"),
    Variable("SecurityCtrlr", "CertSigningWaitMinimum", I, RW, default=60, unit="s", min_limit=1, max_limit=86400,
             key16="CertSigningWaitMinimum", store_key="ocpp:CertSigningWaitMinimum"),
    Variable("SecurityCtrlr", "CertSigningRepeatTimes", I, RW, default=3, min_limit=0, max_limit=100,
             key16="CertSigningRepeatTimes", store_key="ocpp:CertSigningRepeatTimes"),
    Variable("SecurityCtrlr", "MaxCertificateChainSize", I, default=10000, key16="CertificateSignedMaxChainSize"),
    Variable("SecurityCtrlr", "CertificateStoreMaxLength", I, default=20, key16="CertificateStoreMaxLength",
             only16=True, description="root certificates of all kinds together"),
    Variable("SecurityCtrlr", "CertificateEntries", I, default=0, key16="CertificateEntries",
             description="root certificates installed"),
    Variable("SecurityCtrlr", "AdditionalRootCertificateCheck", B, default=False, key16="AdditionalRootCertificateCheck"),
)

AUTH = (  # read by station.core.authorization at every decision (no apply hook needed)
    Variable("AuthCtrlr", "Enabled", B, RW, default=True),
    Variable("AuthCtrlr", "AuthorizeRemoteStart", B, RW, default=False, key16="AuthorizeRemoteTxRequests"),
    Variable("AuthCtrlr", "LocalAuthorizeOffline", B, RW, default=True, key16="LocalAuthorizeOffline"),
    Variable("AuthCtrlr", "LocalPreAuthorize", B, RW, default=True, key16="LocalPreAuthorize"),
    Variable("AuthCtrlr", "OfflineTxForUnknownIdEnabled", B, RW, default=False, key16="AllowOfflineTxForUnknownId"),
    Variable("AuthCtrlr", "DisableRemoteAuthorization", B, RW, default=False),
    Variable("AuthCtrlr", "FreeVendIdTag", S, RW, default=FREE_VEND_ID_TAG, min_limit=1, max_limit=20,
             key16="FreeVendIdTag", only16=True,
             description="StartTransaction idTag of a transaction started without a token (TxStartPoint EVConnected)"),
    Variable("AuthCacheCtrlr", "Available", B, default=True),
    Variable("AuthCacheCtrlr", "Enabled", B, RW, default=True, key16="AuthorizationCacheEnabled"),
    Variable("AuthCacheCtrlr", "LifeTime", I, RW, default=86400, unit="s", min_limit=0),
    Variable("AuthCacheCtrlr", "Policy", OPTION, RW, default="LRU", values_list=("LRU", "LFU", "FIFO")),
    Variable("AuthCacheCtrlr", "Storage", I, default=CACHE_MAX_ENTRIES, description="most tokens the cache holds"),
    Variable("LocalAuthListCtrlr", "Available", B, default=True),
    Variable("LocalAuthListCtrlr", "Enabled", B, RW, default=True, key16="LocalAuthListEnabled"),
    Variable("LocalAuthListCtrlr", "Entries", I, default=0, description="tokens in the local list now"),
    Variable("LocalAuthListCtrlr", "ItemsPerMessage", I, default=1000, key16="SendLocalListMaxLength"),
    Variable("LocalAuthListCtrlr", "BytesPerMessage", I, default=65536),
    Variable("LocalAuthListCtrlr", "LocalAuthListMaxLength", I, default=10000, key16="LocalAuthListMaxLength",
             only16=True),
)

TRANSACTIONS = (
    Variable("TxCtrlr", "EVConnectionTimeOut", I, RW, default=60, unit="s", min_limit=1, max_limit=3600,
             key16="ConnectionTimeOut", store_key="connection_timeout_s"),
    Variable("TxCtrlr", "StopTxOnEVSideDisconnect", B, RW, default=True, key16="StopTransactionOnEVSideDisconnect",
             owner_required=True),
    Variable("TxCtrlr", "StopTxOnInvalidId", B, RW, default=True, key16="StopTransactionOnInvalidId"),
    Variable("TxCtrlr", "MaxEnergyOnInvalidId", I, RW, default=0, unit="Wh", min_limit=0, key16="MaxEnergyOnInvalidId",
             description="with StopTxOnInvalidId false: energy a refused token's transaction may still draw"),
    Variable("TxCtrlr", "TxStartPoint", MEMBERS, RW, default="PowerPathClosed", values_list=TX_POINTS,
             owner_required=True, description="EVConnected, Authorized, PowerPathClosed, EnergyTransfer (station/core/tx_points.py)"),
    Variable("TxCtrlr", "TxStopPoint", MEMBERS, RW, default="EVConnected,Authorized", values_list=TX_POINTS,
             owner_required=True, description="EVConnected, Authorized, PowerPathClosed, EnergyTransfer"),
    Variable("SampledDataCtrlr", "Enabled", B, default=True),
    Variable("SampledDataCtrlr", "TxUpdatedInterval", I, RW, default=60, unit="s", min_limit=0, max_limit=86400,
             key16="MeterValueSampleInterval", store_key="meter_value_seconds",
             description="0: no periodic meter values during a transaction"),
    Variable("SampledDataCtrlr", "TxUpdatedMeasurands", MEMBERS, RW, default=SAMPLED, values_list=MEASURANDS,
             key16="MeterValuesSampledData", owner_required=True),
    Variable("SampledDataCtrlr", "TxStartedMeasurands", MEMBERS, RW, default=SAMPLED, values_list=MEASURANDS,
             owner_required=True),
    Variable("SampledDataCtrlr", "TxEndedMeasurands", MEMBERS, RW, default="Energy.Active.Import.Register",
             values_list=MEASURANDS, key16="StopTxnSampledData", owner_required=True,
             description="the billing register only by default: in 1.6 it is also sent every MeterValueSampleInterval "
                         "for the whole session in StopTransaction (all measurands: ~53 KB for 2 h)"),
    Variable("SampledDataCtrlr", "TxEndedInterval", I, RW, default=0, unit="s", min_limit=0, max_limit=86400,
             owner_required=True, description="readings for the Ended event every so many s from the start; 0: none"),
    Variable("AlignedDataCtrlr", "Enabled", B, default=True),
    Variable("AlignedDataCtrlr", "Interval", I, RW, default=0, unit="s", min_limit=0, max_limit=86400,
             key16="ClockAlignedDataInterval", store_key="ocpp:ClockAlignedDataInterval", owner_required=True),
    Variable("AlignedDataCtrlr", "Measurands", MEMBERS, RW, default="Energy.Active.Import.Register",
             values_list=MEASURANDS, key16="MeterValuesAlignedData", owner_required=True),
    Variable("AlignedDataCtrlr", "TxEndedInterval", I, RW, default=0, unit="s", min_limit=0, max_limit=86400,
             owner_required=True, description="clock-aligned readings for the Ended event; 0: none"),
    Variable("AlignedDataCtrlr", "SendDuringIdle", B, RW, default=False, owner_required=True,
             description="true: clock-aligned values only while no transaction runs"),
    Variable("AlignedDataCtrlr", "TxEndedMeasurands", MEMBERS, RW, default="", values_list=MEASURANDS,
             key16="StopTxnAlignedData", owner_required=True),
)

SMART_CHARGING = (
    Variable("SmartChargingCtrlr", "Enabled", B, default=True),
    Variable("SmartChargingCtrlr", "Available", B, default=True),
    Variable("SmartChargingCtrlr", "Entries", I, instance="ChargingProfiles", default=0, max_limit=MAX_PROFILES,
             description="charging profiles installed now"),
    Variable("SmartChargingCtrlr", "LimitChangeSignificance", D, RW, default=10.0, unit="Percent", min_limit=0,
             max_limit=100, owner_required=True),
    Variable("SmartChargingCtrlr", "PeriodsPerSchedule", I, default=MAX_PERIODS, key16="ChargingScheduleMaxPeriods"),
    Variable("SmartChargingCtrlr", "ProfileStackLevel", I, default=MAX_STACK_LEVEL, key16="ChargeProfileMaxStackLevel"),
    Variable("SmartChargingCtrlr", "RateUnit", MEMBERS, default="A,W", values_list=("A", "W")),
    Variable("SmartChargingCtrlr", "Phases3to1", B, default=False, key16="ConnectorSwitch3to1PhaseSupported"),
    Variable("SmartChargingCtrlr", "ChargingScheduleAllowedChargingRateUnit", S, default="Current,Power",
             key16="ChargingScheduleAllowedChargingRateUnit", only16=True),
    Variable("SmartChargingCtrlr", "MaxChargingProfilesInstalled", I, default=MAX_PROFILES,
             key16="MaxChargingProfilesInstalled", only16=True),
)

DEVICE_DATA = tuple(
    Variable("DeviceDataCtrlr", name, I, instance=message, default=limits[index],
             key16="GetConfigurationMaxKeys" if (name, message) == ("ItemsPerMessage", "GetVariables") else None)
    for message, limits in MESSAGE_LIMITS.items()
    for index, name in enumerate(("ItemsPerMessage", "BytesPerMessage"))
) + (
    Variable("DeviceDataCtrlr", "ValueSize", I, default=1000, description="longest value SetVariables accepts"),
    Variable("DeviceDataCtrlr", "ReportingValueSize", I, default=2500),
    Variable("DeviceDataCtrlr", "ConfigurationValueSize", I, default=1000),
)

CLOCK = (
    Variable("ClockCtrlr", "DateTime", TIME, description="the station's clock (UTC)"),
    Variable("ClockCtrlr", "TimeSource", SEQUENCE, default="Heartbeat",
             values_list=("Heartbeat", "NTP", "GPS", "RealTimeClock", "MobileNetwork", "RadioTimeTransmitter")),
)

MONITORING = (
    Variable("MonitoringCtrlr", "Available", B, default=False),
    Variable("MonitoringCtrlr", "Enabled", B, RW, default=False, owner_required=True),
    Variable("MonitoringCtrlr", "ItemsPerMessage", I, instance="SetVariableMonitoring", default=50),
    Variable("MonitoringCtrlr", "BytesPerMessage", I, instance="SetVariableMonitoring", default=65536),
    Variable("MonitoringCtrlr", "ItemsPerMessage", I, instance="ClearVariableMonitoring", default=50),
    Variable("MonitoringCtrlr", "BytesPerMessage", I, instance="ClearVariableMonitoring", default=65536),
    Variable("MonitoringCtrlr", "OfflineQueuingSeverity", I, RW, default=9, min_limit=0, max_limit=9,
             owner_required=True),
)

RESERVATION = (  # read by station.core.reservations
    Variable("ReservationCtrlr", "Available", B, default=True),
    Variable("ReservationCtrlr", "Enabled", B, RW, default=True),
    Variable("ReservationCtrlr", "NonEvseSpecific", B, default=True, key16="ReserveConnectorZeroSupported",
             description="a reservation may name no EVSE (1.6: connector 0)"),
)

STANDARD: tuple[Variable, ...] = (
    *STATION, *EVSE, *OCPP_COMM, *SECURITY, *AUTH, *TRANSACTIONS, *SMART_CHARGING, *DEVICE_DATA, *CLOCK,
    *MONITORING, *RESERVATION,
)
