"""The OPC UA agent's parameters: node ids and data types checked when the graph is
validated (so a malformed node id is reported with its line), the rest at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from asyncua import ua
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..shorthand import string_means

#: The OPC UA built-in types a mapped node may have (ua.VariantType names).
NodeType = Literal["Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
                   "Float", "Double", "String", "DateTime"]
#: The results a part's result may carry, each written to the node the graph maps it to.
RESULT_FIELDS = ("part_id", "outcome", "defective", "score", "label", "code", "missing", "time")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSpec(_Strict):
    """One node: its id (``ns=2;s=Line.Result.PartId``) and, optionally, its data type.

    Without ``type`` the agent takes the node's own data type from the server at start;
    with it, a node whose data type differs fails the start, naming the field.
    """

    node: str = Field(description="the node id, in the OPC UA string form: ns=2;s=Name, ns=2;i=1001, ...")
    type: NodeType | None = Field(None, description="the node's data type; default: read from the server")

    _shorthand = string_means("node")

    @field_validator("node")
    @classmethod
    def _parse(cls, value: str) -> str:
        try:
            ua.NodeId.from_string(value)
        except Exception as exc:  # noqa: BLE001 - asyncua raises several kinds for a malformed id
            raise ValueError(f"not an OPC UA node id: {value!r} ({exc}); write e.g. ns=2;s=Line.PartId") from None
        return value


class ResultNodes(_Strict):
    """Where each part's result goes. ``sequence`` is written last, after the others."""

    sequence: NodeSpec | None = Field(None, description="the result counter: 1, 2, ... wrapping to 1 (0: none yet)")
    part_id: NodeSpec | None = None
    outcome: NodeSpec | None = Field(None, description="a number (outcomes), a String (ok/defective/incomplete) "
                                                       "or a Boolean (rejected)")
    defective: NodeSpec | None = Field(None, description="Boolean: any outcome but ok")
    score: NodeSpec | None = Field(None, description="the highest defect score among the part's views")
    label: NodeSpec | None = Field(None, description="String: the first defective view's label, else ok")
    code: NodeSpec | None = Field(None, description="the label as a number, through codes")
    missing: NodeSpec | None = Field(None, description="String: the views without a verdict, comma-separated")
    time: NodeSpec | None = Field(None, description="DateTime: when the agent wrote the result")

    def entries(self) -> list[tuple[str, NodeSpec]]:
        """(field, node) of every mapped field, the data first and the sequence last."""
        out = [(name, spec) for name in RESULT_FIELDS if (spec := getattr(self, name)) is not None]
        return out + ([("sequence", self.sequence)] if self.sequence is not None else [])


class Outcomes(_Strict):
    ok: int = 0
    defective: int = 1
    incomplete: int = 2


class Handshake(NodeSpec):
    """The node where the PLC writes the sequence number of the result it has taken."""

    timeout: float = Field(5.0, gt=0, description="seconds before an untaken result is logged as an error")
    on_timeout: Literal["wait", "write"] = Field("wait", description="keep waiting, or write the next result anyway")


class Subscription(NodeSpec):
    """A node whose changes are sent on the ``values`` port."""

    rising: bool = Field(False, description="Boolean nodes: send only changes to true (a part-present edge)")


Policy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep"]


class Security(_Strict):
    """A secure channel: the policy, and this side's certificate and private key files."""

    policy: Policy = "Basic256Sha256"
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = Field(None, description="this side's certificate (DER or PEM)")
    private_key: Path | None = Field(None, description="this side's private key (PEM); its password: secret <secret>_key_password")
    server_certificate: Path | None = Field(
        None, description="client mode: the server's certificate; default: taken from its endpoint list")

    @model_validator(mode="after")
    def _files(self) -> Security:
        if self.policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"security policy {self.policy} needs a certificate and a private_key file")
        return self


class OpcuaParams(_Strict):
    mode: Literal["client", "server"] = Field(
        "client", description="client: write results to (and subscribe to) a server's nodes; "
                              "server: expose the line's state as an address space")
    url: str = Field(description="client: the server's endpoint; server: the endpoint to listen on "
                                 "(opc.tcp://0.0.0.0:4840/graphrun/); ${ENV} references are expanded by the graph")
    security: Security | None = None
    secret: str = Field("opcua", description="names the secrets <secret>_user and <secret>_password "
                                             "(GRAPHRUN_OPCUA_USER ...): never in the graph")
    # --- client mode -----------------------------------------------------------------
    nodes: ResultNodes = Field(default_factory=ResultNodes, description="client mode: where each part's result goes")
    outcomes: Outcomes = Field(default_factory=Outcomes)
    codes: dict[str, int] = Field(default_factory=dict, description="label -> number for the code node")
    handshake: Handshake | None = None
    subscribe: dict[str, Subscription] = Field(default_factory=dict, description="name -> node, sent on values")
    publishing_interval: float = Field(0.05, gt=0, description="seconds: how often the server reports changes")
    timeout: float = Field(2.0, gt=0, description="seconds to wait for the server's answer to one request")
    join_timeout: float = Field(2.0, gt=0, description="seconds a part waits for its missing views")
    reconnect_min: float = Field(0.1, gt=0)
    reconnect_max: float = Field(0.5, gt=0, description="longest delay between reconnection attempts")
    max_queue: int = Field(10_000, ge=1, description="closed parts kept while the server is down")
    # --- server mode -----------------------------------------------------------------
    namespace: str = Field("urn:graphrun:line", description="server mode: the namespace of the line's nodes")
    health_interval: float = Field(1.0, gt=0, description="server mode: seconds between updates of the Health nodes")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"not an OPC UA endpoint: {value!r} (write opc.tcp://host:4840/path)")
        return value

    @model_validator(mode="after")
    def _mode(self) -> OpcuaParams:
        if self.mode == "server":
            client_only = [k for k in ("handshake", "subscribe") if getattr(self, k)]
            client_only += ["nodes"] if self.nodes.entries() else []
            if client_only:
                raise ValueError(f"{', '.join(client_only)}: client mode only (mode is server)")
        elif self.nodes.entries() and self.nodes.sequence is None:
            raise ValueError("nodes: a sequence node is needed, so that the server sees each new result "
                             "(and duplicates are visible)")
        return self
