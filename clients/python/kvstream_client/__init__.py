"""A Python client for kvstream-edge's EdgeService.

    from kvstream_client import Client, Policy
    client = Client("127.0.0.1:50051")
    result = client.ask("What is the code of saddle?", context="The code of saddle is shoos.",
                        policy=Policy(mode="kv", spec="int4"),
                        on_token=lambda text: print(text, end="", flush=True))
    print(result.text, result.stats.ttft_seconds)

The gRPC stubs are generated from the repository's proto/ at build time (protoc and
Debian's gRPC Python plugin); they must be importable as `kvstream.v1` (the build puts
them, and this package, under build/python).
"""

from kvstream_client.client import AskResult, Client, KvstreamError, Policy

__all__ = ["AskResult", "Client", "KvstreamError", "Policy"]
