"""Every parameter of the `infinipot` node, declared in one place.

Why one table: the node, its YAML file (`config/robot.yaml`), the launch file and the tests all need the same
list of names, types, defaults and ranges. `PARAMETERS` is that list; `declare_parameters` turns it into
`ParameterDescriptor`s (with description, ranges and read-only flags, so `ros2 param describe` explains
them), and `NodeSettings.from_node` reads the values into one typed object.

Read-only parameters configure the model, the per-camera sessions and the subscriptions, which are built
once at start-up; changing them at runtime would silently do nothing, so ROS refuses it. The few that can
change at runtime (sampling rate, request timeout, stats period, image size limit, model-error policy) are validated by
`validate_update`, which the node registers as its on-set-parameters callback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from infinipot.sampling import STAMP_RESTART_S

__all__ = [
    "PARAMETERS",
    "NodeSettings",
    "ParamSpec",
    "declare_parameters",
    "default_of",
    "validate_update",
]

try:  # the engine is the authority on policy names
    from infinipot.policies import POLICY_NAMES as _POLICIES
except ImportError:  # pragma: no cover - engine not importable (e.g. a partial checkout)
    _POLICIES = ("full", "infinipot", "tar", "van", "uniform", "sliding_window")


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: name, default (its type is the parameter's type), text and constraints."""

    name: str
    default: Any
    description: str
    read_only: bool = True
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def type(self) -> ParameterType:
        if isinstance(self.default, bool):
            return ParameterType.PARAMETER_BOOL
        if isinstance(self.default, int):
            return ParameterType.PARAMETER_INTEGER
        if isinstance(self.default, float):
            return ParameterType.PARAMETER_DOUBLE
        if isinstance(self.default, str):
            return ParameterType.PARAMETER_STRING
        return ParameterType.PARAMETER_STRING_ARRAY

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" One of: {', '.join(self.choices)}."
        desc = ParameterDescriptor(
            name=self.name, type=self.type, description=text, read_only=self.read_only
        )
        if self.min_value is not None and self.max_value is not None:
            if isinstance(self.default, float):
                desc.floating_point_range = [
                    FloatingPointRange(from_value=float(self.min_value), to_value=float(self.max_value))
                ]
            else:
                desc.integer_range = [
                    IntegerRange(from_value=int(self.min_value), to_value=int(self.max_value), step=0)
                ]
        return desc

    def check(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None. (Types are checked by rclpy already.)"""
        if self.choices and value not in self.choices:
            return f"{self.name}: {value!r} is not one of {', '.join(self.choices)}"
        if self.min_value is not None and value < self.min_value:
            return f"{self.name}: {value} < minimum {self.min_value}"
        if self.max_value is not None and value > self.max_value:
            return f"{self.name}: {value} > maximum {self.max_value}"
        return None


PARAMETERS: tuple[ParamSpec, ...] = (
    # --- model -------------------------------------------------------------------------------------
    ParamSpec("model", "infinipot-tiny-qwen2vl",
              "Hugging Face model id or local path of the vision-language model. The default is the small "
              "Qwen2-VL shipped in models/ (trained on the synthetic world only; see its model card); "
              "builtin:tiny-qwen2-vl is a tiny random one for tests (meaningless answers)."),
    ParamSpec("device", "cpu", "torch device for the model, e.g. cpu, cuda, cuda:1."),
    ParamSpec("dtype", "float32", "torch dtype of the model weights and KV cache.",
              choices=("float32", "float16", "bfloat16")),
    ParamSpec("trust_remote_code", False,
              "Allow the model repository to run its own Python code (off unless you trust it)."),
    # --- cameras -----------------------------------------------------------------------------------
    ParamSpec("cameras", ["/camera/image_raw"],
              "Image topics, one video memory each. A topic ending in /compressed is subscribed as "
              "sensor_msgs/CompressedImage (JPEG/PNG), any other as sensor_msgs/Image."),
    ParamSpec("camera_names", [""],
              "Names used in /ask_video's camera field, one per topic; empty = derived from the topic "
              "(e.g. /front/image_raw -> front)."),
    ParamSpec("sample_rate_hz", 2.0,
              "Frames per second of stream time (header stamps) fed to the model; 0 = every frame.",
              read_only=False, min_value=0.0, max_value=1000.0),
    ParamSpec("queue_size", 4,
              "Frames waiting for the model per camera; when full the oldest is dropped (latest wins).",
              min_value=1, max_value=1000),
    ParamSpec("validate_all_frames", False,
              "Convert every received image, not only the sampled ones, so malformed messages between "
              "sampling slots are counted too (costs one decode per message; for audits and stress tests).",
              read_only=False),
    ParamSpec("stamp_restart_s", STAMP_RESTART_S,
              "A frame stamped earlier than the camera's newest one by at most this many seconds (jitter, "
              "reordering in transport) is dropped and counted as out of order; the memory stays. A bigger "
              "jump back (a looped bag, sim time reset) restarts that camera's stream: its memory starts "
              "afresh (counted in stream_restarts). 0 = any backwards stamp restarts; a huge value = never "
              "restart (frames are dropped until the stamps pass the newest one again).",
              read_only=False, min_value=0.0, max_value=1e9),
    ParamSpec("image_qos", "sensor_data",
              "QoS of the camera subscriptions: sensor_data (best effort, depth 5: the usual choice for live "
              "cameras, late frames are dropped in transport) or reliable (reliable, depth image_qos_depth: "
              "for bag replay or tests where every message must reach the node; needs a reliable publisher).",
              choices=("sensor_data", "reliable")),
    ParamSpec("image_qos_depth", 50,
              "History depth of the camera subscriptions when image_qos is reliable.",
              min_value=1, max_value=10000),
    ParamSpec("max_image_pixels", 8192 * 8192,
              "Largest accepted image (width x height); bigger ones are rejected as malformed.",
              read_only=False, min_value=1, max_value=1 << 31),
    # --- video memory ------------------------------------------------------------------------------
    ParamSpec("budget_tokens", 6144,
              "KV-cache threshold |M| in tokens (compress when exceeded); the default is the paper's 6K-token "
              "cache. Replaced by budget_mb when that is > 0. Both 0 is refused at start-up unless policy is "
              "full (the uncapped baseline, chosen on purpose).", min_value=0, max_value=10_000_000),
    ParamSpec("budget_mb", 0.0,
              "Hard cap of each camera's whole KV store in MiB (keys, values and per-token metadata, plus the "
              "question reserve); when > 0 it replaces budget_tokens.", min_value=0.0, max_value=1_000_000.0),
    ParamSpec("policy", "infinipot", "Compression policy (InfiniPot-V or a baseline); full = no cap at all.",
              choices=_POLICIES),
    ParamSpec("target_ratio", 0.75, "Target size |C| after compression, as a fraction of |M| (below 1).",
              min_value=0.05, max_value=0.95),
    ParamSpec("recent_ratio", 0.25, "Recent window at compression: R = floor(recent_ratio x f) newest frames "
              "(at least 1) are always kept and TaR compares older tokens with them, where f is the number of "
              "the model's frames that fit in the budget |M| (fixed by the budget, the same at every "
              "compression). 0 = no recent window: TaR has no reference and its share goes to VaN.",
              min_value=0.0, max_value=0.95),
    ParamSpec("tar_share", 0.5, "Share of the kept tokens chosen by TaR (temporal redundancy); the rest "
              "by VaN (value norm).", min_value=0.0, max_value=1.0),
    ParamSpec("van_pooling", True, "Spatially pool VaN scores so kept tokens form coherent regions."),
    ParamSpec("position_limit", 0,
              "Every rotary position id stays below this over a stream of any length (held frames are moved "
              "down by rotating their cached keys); 0 = the model's max_position_embeddings.",
              min_value=0, max_value=1 << 30),
    # --- questions ---------------------------------------------------------------------------------
    ParamSpec("max_question_chars", 1000, "Longest accepted question in characters.",
              min_value=1, max_value=100_000),
    ParamSpec("max_question_tokens", 64, "Longest question in tokens (longer ones are refused).",
              min_value=1, max_value=8192),
    ParamSpec("max_answer_tokens", 32, "Most tokens generated per answer (/ask_video's max_new_tokens "
              "is clamped to it).", min_value=1, max_value=4096),
    ParamSpec("max_evidence", 5, "Evidence frames (stamp + attention weight) returned with each answer when "
              "/ask_video's max_evidence is 0; 0 = no evidence (its cost is not paid). Requests may ask for up "
              "to 256.", min_value=0, max_value=256),
    ParamSpec("max_pending_questions", 8,
              "Questions that may wait for the model at once (besides the one being answered); more are "
              "refused at once with success=false and \"busy\". Each waiting question holds one executor "
              "thread, so the pool is sized from it.", min_value=1, max_value=256),
    ParamSpec("request_timeout_s", 30.0,
              "A question not answered within this many seconds gets success=false.",
              read_only=False, min_value=0.1, max_value=3600.0),
    # --- reporting / persistence -------------------------------------------------------------------
    ParamSpec("stats_period_s", 1.0, "Period of ~/cache_stats and /diagnostics.",
              read_only=False, min_value=0.05, max_value=3600.0),
    ParamSpec("session_path", "",
              "Directory to save each camera's video memory (every session_save_period_s and at shutdown, "
              "atomically) and restore it at start-up; empty = no persistence. A memory saved under other "
              "budget or policy parameters is rebuilt for the current ones, one saved by another model is "
              "refused and kept aside; both with a WARN line."),
    ParamSpec("session_save_period_s", 30.0,
              "Seconds between snapshots of the changed video memories to session_path, so a crash or "
              "kill -9 loses at most this much; 0 = save at shutdown only.",
              read_only=False, min_value=0.0, max_value=86400.0),
    # --- fault handling ----------------------------------------------------------------------------
    ParamSpec("on_model_error", "reset",
              "What the worker does with a camera's video memory after a model call failed (e.g. CUDA out "
              "of memory) while ingesting or answering for it: reset = start that memory afresh (its "
              "state may be half-written); lower_budget = start it afresh with half the token budget "
              "(frees device memory; falls back to reset when uncapped or already minimal); keep = leave "
              "it as it is. The failed question gets success=false, /diagnostics reports ERROR, and the "
              "node keeps serving.", read_only=False, choices=("reset", "lower_budget", "keep")),
)

_BY_NAME = {spec.name: spec for spec in PARAMETERS}


def default_of(name: str) -> Any:
    """The declared default of parameter `name` (tools that mimic the node take their defaults here)."""
    return _BY_NAME[name].default


def declare_parameters(node: Node) -> None:
    """Declare every parameter with its descriptor. Out-of-range overrides raise at declaration."""
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())


def validate_update(params: Sequence[Parameter]) -> SetParametersResult:
    """On-set-parameters callback: refuse unknown names, wrong types and out-of-range values, with a reason.

    rclpy already refuses read-only parameters and range violations declared in the descriptors; this adds
    the choice lists and a readable reason, and also guards node-internal set_parameters calls.
    """
    for param in params:
        spec = _BY_NAME.get(param.name)
        if spec is None:
            return SetParametersResult(successful=False, reason=f"unknown parameter {param.name!r}")
        if param.type_ != Parameter.Type.from_parameter_value(spec.default):
            return SetParametersResult(
                successful=False,
                reason=f"{param.name} must be {Parameter.Type.from_parameter_value(spec.default).name}, "
                f"got {param.type_.name}",
            )
        problem = spec.check(param.value)
        if problem:
            return SetParametersResult(successful=False, reason=problem)
    return SetParametersResult(successful=True)


def camera_name_for(topic: str) -> str:
    """A short name for a camera topic: /front/image_raw -> front, /cam/image_raw/compressed -> cam."""
    parts = [p for p in topic.strip("/").split("/") if p]
    for suffix in ("compressed", "image_raw", "image_rect_color", "image_rect", "image_color", "image"):
        if len(parts) > 1 and parts[-1] == suffix:
            parts.pop()
    return "_".join(parts) or "camera"


@dataclass(frozen=True)
class CameraConfig:
    """One subscribed camera."""

    name: str
    topic: str
    compressed: bool


@dataclass
class NodeSettings:
    """All parameter values, typed (read once at start-up; runtime-changeable ones are updated in place)."""

    model: str
    device: str
    dtype: str
    trust_remote_code: bool
    cameras: list[CameraConfig]
    sample_rate_hz: float
    queue_size: int
    validate_all_frames: bool
    image_qos: str
    image_qos_depth: int
    max_image_pixels: int
    budget_tokens: int
    budget_mb: float
    policy: str
    target_ratio: float
    recent_ratio: float
    tar_share: float
    van_pooling: bool
    position_limit: int
    max_question_chars: int
    max_question_tokens: int
    max_answer_tokens: int
    request_timeout_s: float
    max_evidence: int
    stats_period_s: float
    session_path: str
    on_model_error: str = "reset"
    stamp_restart_s: float = STAMP_RESTART_S
    session_save_period_s: float = 30.0
    max_pending_questions: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "NodeSettings":
        """Build from a name → value mapping (missing names take their defaults); raises ValueError."""
        merged = {spec.name: spec.default for spec in PARAMETERS}
        merged.update(values)
        for spec in PARAMETERS:
            problem = spec.check(merged[spec.name])
            if problem:
                raise ValueError(problem)
        topics = [t for t in merged.pop("cameras") if t]
        if not topics:
            raise ValueError("cameras: at least one image topic is needed")
        names = [n for n in merged.pop("camera_names") if n]
        if names and len(names) != len(topics):
            raise ValueError(f"camera_names has {len(names)} entries but cameras has {len(topics)}")
        names = names or [camera_name_for(t) for t in topics]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}; set camera_names")
        cameras = [
            CameraConfig(name=n, topic=t, compressed=t.rstrip("/").endswith("/compressed"))
            for n, t in zip(names, topics)
        ]
        settings = cls(cameras=cameras, **merged)
        settings.check_engine()
        return settings

    @classmethod
    def from_node(cls, node: Node) -> "NodeSettings":
        return cls.from_values({spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS})

    def check_engine(self) -> None:
        """Fail fast: the checks the engine makes without a model, at start-up, as a ValueError with the reason
        (otherwise the model worker would fail later and leave a node that never answers)."""
        if self.policy != "full" and not self.budget_tokens and not self.budget_mb:
            raise ValueError(
                "budget_tokens and budget_mb are both 0: set a budget, or policy: full for an uncapped cache"
            )
        from infinipot.errors import InfiniPotError
        from infinipot.session import SessionConfig

        try:
            SessionConfig(**self.session_config_kwargs()).validate()
        except InfiniPotError as err:
            raise ValueError(str(err)) from None

    def session_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `infinipot.session.SessionConfig`."""
        return dict(
            policy=self.policy,
            budget_tokens=(self.budget_tokens or None) if not self.budget_mb else None,
            budget_mb=self.budget_mb or None,
            target_ratio=self.target_ratio,
            recent_ratio=self.recent_ratio,
            tar_share=self.tar_share,
            van_pooling=self.van_pooling,
            position_limit=self.position_limit or None,
            max_question_tokens=self.max_question_tokens,
            max_new_tokens=self.max_answer_tokens,
            max_question_chars=self.max_question_chars,
            evidence=self.max_evidence > 0,
            max_evidence=self.max_evidence,
        )
