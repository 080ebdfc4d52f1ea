from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MeterRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METER_ROLE_CUSTOMER: _ClassVar[MeterRole]
    METER_ROLE_FEEDER_HEAD: _ClassVar[MeterRole]
    METER_ROLE_TRANSFORMER: _ClassVar[MeterRole]

class AckStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_STATUS_UNSPECIFIED: _ClassVar[AckStatus]
    ACK_STATUS_ACCEPTED: _ClassVar[AckStatus]
    ACK_STATUS_DUPLICATE: _ClassVar[AckStatus]
    ACK_STATUS_REJECTED: _ClassVar[AckStatus]

class RejectReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_REASON_UNSPECIFIED: _ClassVar[RejectReason]
    REJECT_REASON_MALFORMED: _ClassVar[RejectReason]
    REJECT_REASON_UNKNOWN_AGENT: _ClassVar[RejectReason]
    REJECT_REASON_REVOKED_AGENT: _ClassVar[RejectReason]
    REJECT_REASON_BAD_SIGNATURE: _ClassVar[RejectReason]
    REJECT_REASON_HASH_MISMATCH: _ClassVar[RejectReason]
    REJECT_REASON_UNSUPPORTED_SCHEMA: _ClassVar[RejectReason]
    REJECT_REASON_SEQUENCE_CONFLICT: _ClassVar[RejectReason]
    REJECT_REASON_STORAGE_UNAVAILABLE: _ClassVar[RejectReason]
    REJECT_REASON_INTERNAL: _ClassVar[RejectReason]
    REJECT_REASON_CERTIFICATE_MISMATCH: _ClassVar[RejectReason]
METER_ROLE_CUSTOMER: MeterRole
METER_ROLE_FEEDER_HEAD: MeterRole
METER_ROLE_TRANSFORMER: MeterRole
ACK_STATUS_UNSPECIFIED: AckStatus
ACK_STATUS_ACCEPTED: AckStatus
ACK_STATUS_DUPLICATE: AckStatus
ACK_STATUS_REJECTED: AckStatus
REJECT_REASON_UNSPECIFIED: RejectReason
REJECT_REASON_MALFORMED: RejectReason
REJECT_REASON_UNKNOWN_AGENT: RejectReason
REJECT_REASON_REVOKED_AGENT: RejectReason
REJECT_REASON_BAD_SIGNATURE: RejectReason
REJECT_REASON_HASH_MISMATCH: RejectReason
REJECT_REASON_UNSUPPORTED_SCHEMA: RejectReason
REJECT_REASON_SEQUENCE_CONFLICT: RejectReason
REJECT_REASON_STORAGE_UNAVAILABLE: RejectReason
REJECT_REASON_INTERNAL: RejectReason
REJECT_REASON_CERTIFICATE_MISMATCH: RejectReason

class MeterReadings(_message.Message):
    __slots__ = ("meters", "meter_index", "interval_end", "energy_wh", "register_wh", "quality_flags", "poll_time_ms", "device_index")
    METERS_FIELD_NUMBER: _ClassVar[int]
    METER_INDEX_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_END_FIELD_NUMBER: _ClassVar[int]
    ENERGY_WH_FIELD_NUMBER: _ClassVar[int]
    REGISTER_WH_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FLAGS_FIELD_NUMBER: _ClassVar[int]
    POLL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    meters: _containers.RepeatedScalarFieldContainer[bytes]
    meter_index: _containers.RepeatedScalarFieldContainer[int]
    interval_end: _containers.RepeatedScalarFieldContainer[int]
    energy_wh: _containers.RepeatedScalarFieldContainer[int]
    register_wh: _containers.RepeatedScalarFieldContainer[int]
    quality_flags: _containers.RepeatedScalarFieldContainer[int]
    poll_time_ms: _containers.RepeatedScalarFieldContainer[int]
    device_index: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, meters: _Optional[_Iterable[bytes]] = ..., meter_index: _Optional[_Iterable[int]] = ..., interval_end: _Optional[_Iterable[int]] = ..., energy_wh: _Optional[_Iterable[int]] = ..., register_wh: _Optional[_Iterable[int]] = ..., quality_flags: _Optional[_Iterable[int]] = ..., poll_time_ms: _Optional[_Iterable[int]] = ..., device_index: _Optional[_Iterable[int]] = ...) -> None: ...

class TransformerTelemetry(_message.Message):
    __slots__ = ("transformers", "metrics", "transformer_index", "metric_index", "time_ms", "value", "quality_flags")
    TRANSFORMERS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMER_INDEX_FIELD_NUMBER: _ClassVar[int]
    METRIC_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FLAGS_FIELD_NUMBER: _ClassVar[int]
    transformers: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    transformer_index: _containers.RepeatedScalarFieldContainer[int]
    metric_index: _containers.RepeatedScalarFieldContainer[int]
    time_ms: _containers.RepeatedScalarFieldContainer[int]
    value: _containers.RepeatedScalarFieldContainer[float]
    quality_flags: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, transformers: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Iterable[str]] = ..., transformer_index: _Optional[_Iterable[int]] = ..., metric_index: _Optional[_Iterable[int]] = ..., time_ms: _Optional[_Iterable[int]] = ..., value: _Optional[_Iterable[float]] = ..., quality_flags: _Optional[_Iterable[int]] = ...) -> None: ...

class PseudonymRotation(_message.Message):
    __slots__ = ("old_key_id", "new_key_id", "old_meters", "new_meters")
    OLD_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    OLD_METERS_FIELD_NUMBER: _ClassVar[int]
    NEW_METERS_FIELD_NUMBER: _ClassVar[int]
    old_key_id: str
    new_key_id: str
    old_meters: _containers.RepeatedScalarFieldContainer[bytes]
    new_meters: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, old_key_id: _Optional[str] = ..., new_key_id: _Optional[str] = ..., old_meters: _Optional[_Iterable[bytes]] = ..., new_meters: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BatchPayload(_message.Message):
    __slots__ = ("meter_readings", "transformer_telemetry", "devices", "rotations", "device_roles")
    METER_READINGS_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMER_TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ROTATIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ROLES_FIELD_NUMBER: _ClassVar[int]
    meter_readings: MeterReadings
    transformer_telemetry: TransformerTelemetry
    devices: _containers.RepeatedScalarFieldContainer[str]
    rotations: _containers.RepeatedCompositeFieldContainer[PseudonymRotation]
    device_roles: _containers.RepeatedScalarFieldContainer[MeterRole]
    def __init__(self, meter_readings: _Optional[_Union[MeterReadings, _Mapping]] = ..., transformer_telemetry: _Optional[_Union[TransformerTelemetry, _Mapping]] = ..., devices: _Optional[_Iterable[str]] = ..., rotations: _Optional[_Iterable[_Union[PseudonymRotation, _Mapping]]] = ..., device_roles: _Optional[_Iterable[_Union[MeterRole, str]]] = ...) -> None: ...

class BatchHeader(_message.Message):
    __slots__ = ("agent_id", "sequence", "created_ms", "schema_version", "pseudonym_key_id", "payload_sha256", "software_version", "register_map_version", "validation_ruleset")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    PSEUDONYM_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REGISTER_MAP_VERSION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_RULESET_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    sequence: int
    created_ms: int
    schema_version: int
    pseudonym_key_id: str
    payload_sha256: bytes
    software_version: str
    register_map_version: int
    validation_ruleset: str
    def __init__(self, agent_id: _Optional[str] = ..., sequence: _Optional[int] = ..., created_ms: _Optional[int] = ..., schema_version: _Optional[int] = ..., pseudonym_key_id: _Optional[str] = ..., payload_sha256: _Optional[bytes] = ..., software_version: _Optional[str] = ..., register_map_version: _Optional[int] = ..., validation_ruleset: _Optional[str] = ...) -> None: ...

class SignedBatch(_message.Message):
    __slots__ = ("header", "payload", "signature")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    payload: bytes
    signature: bytes
    def __init__(self, header: _Optional[bytes] = ..., payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("agent_id", "sequence", "status", "reason", "detail", "meter_readings")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    METER_READINGS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    sequence: int
    status: AckStatus
    reason: RejectReason
    detail: str
    meter_readings: int
    def __init__(self, agent_id: _Optional[str] = ..., sequence: _Optional[int] = ..., status: _Optional[_Union[AckStatus, str]] = ..., reason: _Optional[_Union[RejectReason, str]] = ..., detail: _Optional[str] = ..., meter_readings: _Optional[int] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("serving", "version", "schema_version", "storage", "detail", "time_ms")
    SERVING_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    serving: bool
    version: str
    schema_version: int
    storage: str
    detail: str
    time_ms: int
    def __init__(self, serving: _Optional[bool] = ..., version: _Optional[str] = ..., schema_version: _Optional[int] = ..., storage: _Optional[str] = ..., detail: _Optional[str] = ..., time_ms: _Optional[int] = ...) -> None: ...
