"""EdgeService.Ask over gRPC: streams answer tokens, returns them with the request stats."""

import dataclasses
import time
from typing import Callable, Iterator, Optional

import grpc

from kvstream.v1 import service_pb2, service_pb2_grpc

_MODES = {
    "": service_pb2.MODE_UNSPECIFIED,
    "kv": service_pb2.MODE_KV,
    "scout": service_pb2.MODE_SCOUT,
    "text": service_pb2.MODE_TEXT,
    "adaptive": service_pb2.MODE_ADAPTIVE,
    "projected": service_pb2.MODE_PROJECTED,
}

# The edge daemon's messages can be large (a long context); gRPC's default is 4 MiB.
_MAX_MESSAGE_BYTES = 64 << 20


class KvstreamError(Exception):
    """A failed Ask: the gRPC status code (e.g. grpc.StatusCode.UNAVAILABLE) and the
    daemon's message saying what was expected and what was found."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass
class Policy:
    """How a request is served; unset fields take the edge daemon's defaults.

    mode: "", "kv", "scout", "text", "adaptive" or "projected". selector: full, q2c,
    snapkv, h2o or random. spec: a plan string such as "int4" or "k=int4/ch,v=int4,zstd=3".
    """

    mode: str = ""
    selector: str = ""
    retention: float = 0.0
    spec: str = ""
    max_tokens: int = 0
    ttft_target_seconds: float = 0.0
    temperature: float = 0.0
    top_p: float = 0.0
    seed: int = 0
    cloud_model: str = ""

    def to_proto(self) -> "service_pb2.Policy":
        if self.mode not in _MODES:
            raise ValueError(
                f"policy mode: expected one of {sorted(m for m in _MODES if m)}, found {self.mode!r}"
            )
        return service_pb2.Policy(
            mode=_MODES[self.mode],
            selector=self.selector,
            retention=self.retention,
            spec=self.spec,
            max_tokens=self.max_tokens,
            ttft_target_seconds=self.ttft_target_seconds,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            cloud_model=self.cloud_model,
        )


@dataclasses.dataclass
class AskResult:
    token_ids: list
    text: str
    stats: "service_pb2.RequestStats"  # mode, spec, bytes, stage seconds, TTFT, ...
    ttft_seconds: float  # first answer token, as this client saw it


class Client:
    """A channel to one kvstream-edge. `token`: the bearer token the edge requires
    (--auth_tokens_file). TLS when `tls_ca` (a PEM file) is given, with a client
    certificate when `tls_cert` / `tls_key` are; `server_name` overrides the name the
    certificate is checked against."""

    def __init__(
        self,
        target: str,
        token: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        server_name: Optional[str] = None,
    ):
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        if tls_ca:
            if bool(tls_cert) != bool(tls_key):
                raise ValueError("a client certificate needs its key, and a key its certificate")
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca),
                private_key=_read(tls_key) if tls_key else None,
                certificate_chain=_read(tls_cert) if tls_cert else None,
            )
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = service_pb2_grpc.EdgeServiceStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stream(
        self,
        question: str,
        context: str = "",
        system: str = "",
        policy: Optional[Policy] = None,
        timeout: float = 60.0,
    ) -> Iterator["service_pb2.AskEvent"]:
        """The raw events: one per answer token, then the stats. Raises KvstreamError."""
        request = service_pb2.AskRequest(
            context=context.encode(),
            question=question.encode(),
            system=system.encode(),
            policy=(policy or Policy()).to_proto(),
        )
        try:
            yield from self._stub.Ask(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise KvstreamError(e.code(), e.details() or "") from None

    def ask(
        self,
        question: str,
        context: str = "",
        system: str = "",
        policy: Optional[Policy] = None,
        timeout: float = 60.0,
        on_token: Optional[Callable[[str], None]] = None,
    ) -> AskResult:
        """Asks, calling `on_token(text)` as each answer token arrives (text may end in the
        middle of a UTF-8 sequence, which the next token completes)."""
        start = time.monotonic()
        ids, pieces, stats, ttft = [], [], None, 0.0
        for event in self.stream(question, context, system, policy, timeout):
            if event.HasField("token"):
                if not ids:
                    ttft = time.monotonic() - start
                ids.append(event.token.id)
                pieces.append(event.token.text)
                if on_token is not None:
                    on_token(event.token.text.decode("utf-8", errors="replace"))
            elif event.HasField("stats"):
                stats = event.stats
        if stats is None:
            raise KvstreamError(grpc.StatusCode.INTERNAL, "the edge ended the answer without its stats")
        text = b"".join(pieces).decode("utf-8", errors="replace")
        return AskResult(token_ids=ids, text=text, stats=stats, ttft_seconds=ttft)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
