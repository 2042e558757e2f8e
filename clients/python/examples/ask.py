#!/usr/bin/python3
"""Asks a kvstream-edge one question and prints the answer as it streams, then the stats.

    PYTHONPATH=build/python /usr/bin/python3 clients/python/examples/ask.py \
        --target=127.0.0.1:50051 --question="What is the code of saddle?" \
        --context="The code of saddle is shoos." --mode=kv --spec=int4
"""

import argparse
import sys

from kvstream_client import Client, KvstreamError, Policy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="127.0.0.1:50051", help="the edge's address")
    p.add_argument("--question", required=True)
    p.add_argument("--context", default="")
    p.add_argument("--mode", default="", help="kv, scout, text, adaptive or projected")
    p.add_argument("--spec", default="", help="plan string, e.g. int4")
    p.add_argument("--max_tokens", type=int, default=0)
    p.add_argument("--token_file", default="", help="file holding the bearer token")
    p.add_argument("--tls_ca", default="", help="PEM CA: reach the edge over TLS")
    args = p.parse_args()
    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    policy = Policy(mode=args.mode, spec=args.spec, max_tokens=args.max_tokens)
    with Client(args.target, token=token, tls_ca=args.tls_ca or None) as client:
        try:
            r = client.ask(args.question, context=args.context, policy=policy,
                           on_token=lambda t: print(t, end="", flush=True))
        except KvstreamError as e:
            print(f"ask failed: {e}", file=sys.stderr)
            return 1
    s = r.stats
    print(f"\n[{len(r.token_ids)} tokens, ttft {r.ttft_seconds:.3f} s, wire {s.wire_bytes} bytes, "
          f"x{s.compression_ratio:.1f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
