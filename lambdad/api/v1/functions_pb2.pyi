import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InvocationType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVOCATION_TYPE_REQUEST_RESPONSE: _ClassVar[InvocationType]
    INVOCATION_TYPE_EVENT: _ClassVar[InvocationType]

class FunctionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUNCTION_STATUS_UNSPECIFIED: _ClassVar[FunctionStatus]
    FUNCTION_STATUS_READY: _ClassVar[FunctionStatus]
    FUNCTION_STATUS_IDLE: _ClassVar[FunctionStatus]
    FUNCTION_STATUS_DEPLOYING: _ClassVar[FunctionStatus]
INVOCATION_TYPE_REQUEST_RESPONSE: InvocationType
INVOCATION_TYPE_EVENT: InvocationType
FUNCTION_STATUS_UNSPECIFIED: FunctionStatus
FUNCTION_STATUS_READY: FunctionStatus
FUNCTION_STATUS_IDLE: FunctionStatus
FUNCTION_STATUS_DEPLOYING: FunctionStatus

class GetVersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DaemonInfo(_message.Message):
    __slots__ = ("version", "api_version", "python_version", "docker_version", "started_at", "domain", "url_template")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    DOCKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    URL_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    version: str
    api_version: str
    python_version: str
    docker_version: str
    started_at: _timestamp_pb2.Timestamp
    domain: str
    url_template: str
    def __init__(self, version: _Optional[str] = ..., api_version: _Optional[str] = ..., python_version: _Optional[str] = ..., docker_version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., domain: _Optional[str] = ..., url_template: _Optional[str] = ...) -> None: ...

class FunctionConfig(_message.Message):
    __slots__ = ("runtime", "handler", "timeout_seconds", "memory_mb", "env", "network", "cpu", "pids_limit", "scaling")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    PIDS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SCALING_FIELD_NUMBER: _ClassVar[int]
    runtime: str
    handler: str
    timeout_seconds: int
    memory_mb: int
    env: _containers.ScalarMap[str, str]
    network: str
    cpu: float
    pids_limit: int
    scaling: Scaling
    def __init__(self, runtime: _Optional[str] = ..., handler: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., memory_mb: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ..., network: _Optional[str] = ..., cpu: _Optional[float] = ..., pids_limit: _Optional[int] = ..., scaling: _Optional[_Union[Scaling, _Mapping]] = ...) -> None: ...

class Scaling(_message.Message):
    __slots__ = ("concurrency", "min_instances", "max_instances", "idle_timeout_seconds", "queue_timeout_seconds")
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MIN_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    concurrency: int
    min_instances: int
    max_instances: int
    idle_timeout_seconds: int
    queue_timeout_seconds: int
    def __init__(self, concurrency: _Optional[int] = ..., min_instances: _Optional[int] = ..., max_instances: _Optional[int] = ..., idle_timeout_seconds: _Optional[int] = ..., queue_timeout_seconds: _Optional[int] = ...) -> None: ...

class ConfigOverrides(_message.Message):
    __slots__ = ("handler", "timeout_seconds", "memory_mb", "env", "network", "cpu", "concurrency", "min_instances", "max_instances", "idle_timeout_seconds")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MIN_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    MAX_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    handler: str
    timeout_seconds: int
    memory_mb: int
    env: _containers.ScalarMap[str, str]
    network: str
    cpu: float
    concurrency: int
    min_instances: int
    max_instances: int
    idle_timeout_seconds: int
    def __init__(self, handler: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., memory_mb: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ..., network: _Optional[str] = ..., cpu: _Optional[float] = ..., concurrency: _Optional[int] = ..., min_instances: _Optional[int] = ..., max_instances: _Optional[int] = ..., idle_timeout_seconds: _Optional[int] = ...) -> None: ...

class DeployHeader(_message.Message):
    __slots__ = ("name", "size", "sha256", "overrides", "no_cache", "prewarm")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    PREWARM_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    sha256: str
    overrides: ConfigOverrides
    no_cache: bool
    prewarm: int
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., overrides: _Optional[_Union[ConfigOverrides, _Mapping]] = ..., no_cache: _Optional[bool] = ..., prewarm: _Optional[int] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DeployHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[DeployHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class DeployProgress(_message.Message):
    __slots__ = ("step", "total_steps", "title", "state")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[DeployProgress.State]
        STATE_STARTED: _ClassVar[DeployProgress.State]
        STATE_DONE: _ClassVar[DeployProgress.State]
    STATE_UNSPECIFIED: DeployProgress.State
    STATE_STARTED: DeployProgress.State
    STATE_DONE: DeployProgress.State
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    title: str
    state: DeployProgress.State
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., title: _Optional[str] = ..., state: _Optional[_Union[DeployProgress.State, str]] = ...) -> None: ...

class DeployResult(_message.Message):
    __slots__ = ("name", "version", "image", "url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    image: str
    url: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., image: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("progress", "build_output", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BUILD_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: DeployProgress
    build_output: str
    result: DeployResult
    def __init__(self, progress: _Optional[_Union[DeployProgress, _Mapping]] = ..., build_output: _Optional[str] = ..., result: _Optional[_Union[DeployResult, _Mapping]] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("name", "payload", "version", "type")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    payload: bytes
    version: int
    type: InvocationType
    def __init__(self, name: _Optional[str] = ..., payload: _Optional[bytes] = ..., version: _Optional[int] = ..., type: _Optional[_Union[InvocationType, str]] = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("status_code", "payload", "function_error", "request_id", "executed_version", "cold_start")
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    status_code: int
    payload: bytes
    function_error: str
    request_id: str
    executed_version: int
    cold_start: bool
    def __init__(self, status_code: _Optional[int] = ..., payload: _Optional[bytes] = ..., function_error: _Optional[str] = ..., request_id: _Optional[str] = ..., executed_version: _Optional[int] = ..., cold_start: _Optional[bool] = ...) -> None: ...

class Function(_message.Message):
    __slots__ = ("name", "version", "status", "url", "deployed_at", "image", "config", "code_sha256", "code_size", "instances")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_AT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CODE_SHA256_FIELD_NUMBER: _ClassVar[int]
    CODE_SIZE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    status: FunctionStatus
    url: str
    deployed_at: _timestamp_pb2.Timestamp
    image: str
    config: FunctionConfig
    code_sha256: str
    code_size: int
    instances: InstanceCounts
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[_Union[FunctionStatus, str]] = ..., url: _Optional[str] = ..., deployed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., image: _Optional[str] = ..., config: _Optional[_Union[FunctionConfig, _Mapping]] = ..., code_sha256: _Optional[str] = ..., code_size: _Optional[int] = ..., instances: _Optional[_Union[InstanceCounts, _Mapping]] = ...) -> None: ...

class InstanceCounts(_message.Message):
    __slots__ = ("running", "busy", "starting", "draining", "queued")
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    STARTING_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    running: int
    busy: int
    starting: int
    draining: int
    queued: int
    def __init__(self, running: _Optional[int] = ..., busy: _Optional[int] = ..., starting: _Optional[int] = ..., draining: _Optional[int] = ..., queued: _Optional[int] = ...) -> None: ...

class ListFunctionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFunctionsResponse(_message.Message):
    __slots__ = ("functions",)
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    functions: _containers.RepeatedCompositeFieldContainer[Function]
    def __init__(self, functions: _Optional[_Iterable[_Union[Function, _Mapping]]] = ...) -> None: ...

class GetFunctionRequest(_message.Message):
    __slots__ = ("name", "show_env")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHOW_ENV_FIELD_NUMBER: _ClassVar[int]
    name: str
    show_env: bool
    def __init__(self, name: _Optional[str] = ..., show_env: _Optional[bool] = ...) -> None: ...

class DeleteFunctionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteFunctionResponse(_message.Message):
    __slots__ = ("name", "versions_removed", "instances_removed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions_removed: int
    instances_removed: int
    def __init__(self, name: _Optional[str] = ..., versions_removed: _Optional[int] = ..., instances_removed: _Optional[int] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ActivePeriod(_message.Message):
    __slots__ = ("until", "reason")
    FROM_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    until: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., **kwargs) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("number", "image", "image_id", "config", "code_sha256", "code_size", "created_at", "deployed_by", "active", "pruned", "source_version", "active_periods")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CODE_SHA256_FIELD_NUMBER: _ClassVar[int]
    CODE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_BY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PERIODS_FIELD_NUMBER: _ClassVar[int]
    number: int
    image: str
    image_id: str
    config: FunctionConfig
    code_sha256: str
    code_size: int
    created_at: _timestamp_pb2.Timestamp
    deployed_by: str
    active: bool
    pruned: bool
    source_version: int
    active_periods: _containers.RepeatedCompositeFieldContainer[ActivePeriod]
    def __init__(self, number: _Optional[int] = ..., image: _Optional[str] = ..., image_id: _Optional[str] = ..., config: _Optional[_Union[FunctionConfig, _Mapping]] = ..., code_sha256: _Optional[str] = ..., code_size: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deployed_by: _Optional[str] = ..., active: _Optional[bool] = ..., pruned: _Optional[bool] = ..., source_version: _Optional[int] = ..., active_periods: _Optional[_Iterable[_Union[ActivePeriod, _Mapping]]] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name", "to_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    to_version: int
    def __init__(self, name: _Optional[str] = ..., to_version: _Optional[int] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("name", "version", "previous_version", "url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    previous_version: int
    url: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., previous_version: _Optional[int] = ..., url: _Optional[str] = ...) -> None: ...

class UpdateConfigRequest(_message.Message):
    __slots__ = ("name", "overrides")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    name: str
    overrides: ConfigOverrides
    def __init__(self, name: _Optional[str] = ..., overrides: _Optional[_Union[ConfigOverrides, _Mapping]] = ...) -> None: ...

class LogsRequest(_message.Message):
    __slots__ = ("name", "follow", "since_seconds", "tail", "request_id", "version", "local_only")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    SINCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    name: str
    follow: bool
    since_seconds: int
    tail: int
    request_id: str
    version: int
    local_only: bool
    def __init__(self, name: _Optional[str] = ..., follow: _Optional[bool] = ..., since_seconds: _Optional[int] = ..., tail: _Optional[int] = ..., request_id: _Optional[str] = ..., version: _Optional[int] = ..., local_only: _Optional[bool] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("time", "function", "version", "instance", "stream", "request_id", "message", "node")
    TIME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    function: str
    version: int
    instance: str
    stream: str
    request_id: str
    message: str
    node: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., function: _Optional[str] = ..., version: _Optional[int] = ..., instance: _Optional[str] = ..., stream: _Optional[str] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WindowStats(_message.Message):
    __slots__ = ("window", "invocations", "error_rate", "p50_seconds", "p95_seconds", "p99_seconds", "cold_start_rate", "instances_max")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    INVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P95_SECONDS_FIELD_NUMBER: _ClassVar[int]
    P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COLD_START_RATE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_MAX_FIELD_NUMBER: _ClassVar[int]
    window: str
    invocations: int
    error_rate: float
    p50_seconds: float
    p95_seconds: float
    p99_seconds: float
    cold_start_rate: float
    instances_max: int
    def __init__(self, window: _Optional[str] = ..., invocations: _Optional[int] = ..., error_rate: _Optional[float] = ..., p50_seconds: _Optional[float] = ..., p95_seconds: _Optional[float] = ..., p99_seconds: _Optional[float] = ..., cold_start_rate: _Optional[float] = ..., instances_max: _Optional[int] = ...) -> None: ...

class FunctionStats(_message.Message):
    __slots__ = ("name", "windows", "instances_now", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_NOW_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    windows: _containers.RepeatedCompositeFieldContainer[WindowStats]
    instances_now: int
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., windows: _Optional[_Iterable[_Union[WindowStats, _Mapping]]] = ..., instances_now: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class CellPoolClass(_message.Message):
    __slots__ = ("resource_class", "ready", "starting", "memory_bytes")
    RESOURCE_CLASS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    STARTING_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    resource_class: str
    ready: int
    starting: int
    memory_bytes: int
    def __init__(self, resource_class: _Optional[str] = ..., ready: _Optional[int] = ..., starting: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("functions", "cell_pool")
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CELL_POOL_FIELD_NUMBER: _ClassVar[int]
    functions: _containers.RepeatedCompositeFieldContainer[FunctionStats]
    cell_pool: _containers.RepeatedCompositeFieldContainer[CellPoolClass]
    def __init__(self, functions: _Optional[_Iterable[_Union[FunctionStats, _Mapping]]] = ..., cell_pool: _Optional[_Iterable[_Union[CellPoolClass, _Mapping]]] = ...) -> None: ...

class ListInvocationsRequest(_message.Message):
    __slots__ = ("name", "status", "limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    limit: int
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class InvocationInfo(_message.Message):
    __slots__ = ("id", "function", "status", "attempts", "source", "created_at", "next_attempt_at", "started_at", "finished_at", "status_code", "payload", "result", "last_error")
    ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    function: str
    status: str
    attempts: int
    source: str
    created_at: _timestamp_pb2.Timestamp
    next_attempt_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    status_code: int
    payload: bytes
    result: bytes
    last_error: str
    def __init__(self, id: _Optional[str] = ..., function: _Optional[str] = ..., status: _Optional[str] = ..., attempts: _Optional[int] = ..., source: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status_code: _Optional[int] = ..., payload: _Optional[bytes] = ..., result: _Optional[bytes] = ..., last_error: _Optional[str] = ...) -> None: ...

class ListInvocationsResponse(_message.Message):
    __slots__ = ("invocations",)
    INVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    invocations: _containers.RepeatedCompositeFieldContainer[InvocationInfo]
    def __init__(self, invocations: _Optional[_Iterable[_Union[InvocationInfo, _Mapping]]] = ...) -> None: ...

class GetInvocationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RedriveRequest(_message.Message):
    __slots__ = ("id", "all_failed_of")
    ID_FIELD_NUMBER: _ClassVar[int]
    ALL_FAILED_OF_FIELD_NUMBER: _ClassVar[int]
    id: str
    all_failed_of: str
    def __init__(self, id: _Optional[str] = ..., all_failed_of: _Optional[str] = ...) -> None: ...

class RedriveResponse(_message.Message):
    __slots__ = ("redriven",)
    REDRIVEN_FIELD_NUMBER: _ClassVar[int]
    redriven: int
    def __init__(self, redriven: _Optional[int] = ...) -> None: ...

class CreateScheduleRequest(_message.Message):
    __slots__ = ("name", "cron", "tz", "data", "overlap")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    name: str
    cron: str
    tz: str
    data: bytes
    overlap: str
    def __init__(self, name: _Optional[str] = ..., cron: _Optional[str] = ..., tz: _Optional[str] = ..., data: _Optional[bytes] = ..., overlap: _Optional[str] = ...) -> None: ...

class ScheduleInfo(_message.Message):
    __slots__ = ("id", "function", "cron", "tz", "data", "overlap", "next_runs", "last_run", "last_result", "last_invocation", "last_invocation_status")
    ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUNS_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_FIELD_NUMBER: _ClassVar[int]
    LAST_RESULT_FIELD_NUMBER: _ClassVar[int]
    LAST_INVOCATION_FIELD_NUMBER: _ClassVar[int]
    LAST_INVOCATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    function: str
    cron: str
    tz: str
    data: bytes
    overlap: str
    next_runs: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    last_run: _timestamp_pb2.Timestamp
    last_result: str
    last_invocation: str
    last_invocation_status: str
    def __init__(self, id: _Optional[str] = ..., function: _Optional[str] = ..., cron: _Optional[str] = ..., tz: _Optional[str] = ..., data: _Optional[bytes] = ..., overlap: _Optional[str] = ..., next_runs: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ..., last_run: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_result: _Optional[str] = ..., last_invocation: _Optional[str] = ..., last_invocation_status: _Optional[str] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[ScheduleInfo]
    def __init__(self, schedules: _Optional[_Iterable[_Union[ScheduleInfo, _Mapping]]] = ...) -> None: ...

class DeleteScheduleRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class KeyInfo(_message.Message):
    __slots__ = ("id", "name", "role", "created_at", "revoked_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    role: str
    created_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatedKey(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: KeyInfo
    secret: str
    def __init__(self, key: _Optional[_Union[KeyInfo, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyInfo, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("name_or_id",)
    NAME_OR_ID_FIELD_NUMBER: _ClassVar[int]
    name_or_id: str
    def __init__(self, name_or_id: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("id", "name", "state", "grpc_address", "gateway_address", "version", "instances", "cells", "load", "last_seen", "started_at", "leader", "self")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    SELF_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    state: str
    grpc_address: str
    gateway_address: str
    version: str
    instances: int
    cells: int
    load: int
    last_seen: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    leader: bool
    self: bool
    def __init__(self_, id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., grpc_address: _Optional[str] = ..., gateway_address: _Optional[str] = ..., version: _Optional[str] = ..., instances: _Optional[int] = ..., cells: _Optional[int] = ..., load: _Optional[int] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., leader: _Optional[bool] = ..., self: _Optional[bool] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...
