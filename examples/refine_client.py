#!/usr/bin/env python3
"""Probe refinement rounds of a running sharer from Python (docs/REFINEMENT.md).

Generates the gRPC stubs from proto/ at start (grpcio-tools, into a temporary folder), then:
round 1, Share with keep_session (the front half of a prompt at int4); round 2, Refine for
positions not sent yet; round 3, Refine for an int4 residual upgrade of positions held (the
sharer accepts further rounds; the receiver's own protocol stops at two). Every KVWire v2
record's header is decoded here (kvwire/FORMAT.md) and the bytes of each round are printed.
An unknown session must answer NOT_FOUND; Release frees the session once (released, then not).
Exits non-zero when anything is off.

    python3 examples/refine_client.py --sharer 127.0.0.1:50051

Dependencies (pinned, as .ci/run installs them): grpcio==1.66.2 grpcio-tools==1.66.2
protobuf==5.28.3.
"""

import argparse
import importlib
import os
import struct
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO = os.path.join(ROOT, "proto", "proto")
PAYLOADS = {0: "fp16", 1: "int8", 2: "int4"}
KINDS = {0: "base", 1: "residual"}


def stubs():
    """Compiles the .proto files and imports the generated modules."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="kvwire-stubs-")
    files = [f"kvwire/c2c/v1/{n}.proto" for n in ("common", "sharer", "receiver")]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *files])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    pb = importlib.import_module("kvwire.c2c.v1.sharer_pb2")
    grpc_mod = importlib.import_module("kvwire.c2c.v1.sharer_pb2_grpc")
    common = importlib.import_module("kvwire.c2c.v1.common_pb2")
    return pb, grpc_mod, common


def header(record):
    """The decoded header of one KVWire v2 record (session header or frame)."""
    if len(record) < 12 or record[:4] != b"KVW2":
        raise ValueError(f"not a KVWire v2 record: {record[:8]!r}")
    rtype, length = record[4], struct.unpack_from("<I", record, 8)[0]
    if length != len(record):
        raise ValueError(f"record_len {length} but {len(record)} bytes")
    if rtype == ord("S"):
        layers, heads, dim, a, b, tokens, frames = struct.unpack_from("<HHHBBII", record, 28)
        model = record[44:44 + a].decode()
        return {"type": "session", "round": record[6], "layers": layers, "kv_heads": heads,
                "head_dim": dim, "tokens": tokens, "frames": frames, "sharer_model": model}
    if rtype == ord("F"):
        layer = struct.unpack_from("<H", record, 6)[0]
        kind, payload, _gran, _sd, index_mode, _coding, group, rnd = record[12:20]
        t = struct.unpack_from("<I", record, 28)[0]
        return {"type": "frame", "layer": layer, "kind": KINDS.get(kind, kind),
                "payload": PAYLOADS.get(payload, payload), "group": group, "round": rnd,
                "tokens": t, "index_mode": index_mode}
    raise ValueError(f"unknown record type {rtype}")


def run_round(name, call):
    """Pulls a Share/Refine stream; prints and returns its bytes, first header and session id."""
    records, session_id, prompt_tokens = [], "", 0
    for chunk in call:
        records.append(bytes(chunk.frame))
        if chunk.session_id:
            session_id = chunk.session_id
        if chunk.prompt_tokens:
            prompt_tokens = chunk.prompt_tokens
    heads = [header(r) for r in records]
    frames = [h for h in heads if h["type"] == "frame"]
    if heads[0]["type"] != "session" or len(frames) != heads[0]["frames"]:
        raise ValueError(f"{name}: session header announces {heads[0]} but {len(frames)} frames")
    f = frames[0]
    total = sum(len(r) for r in records)
    print(f"{name}: {len(records)} records, {total} bytes; round {f['round']}, {f['kind']} "
          f"{f['payload']} frames of {f['tokens']} positions x {len(frames)} layers")
    return total, heads[0], session_id, prompt_tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sharer", default="127.0.0.1:50051")
    args = ap.parse_args()
    import grpc

    pb, grpc_mod, common = stubs()
    stub = grpc_mod.SharerStub(grpc.insecure_channel(args.sharer))
    text = "Plants take in carbon dioxide from the air and use light to make sugar and oxygen."
    share = pb.ShareRequest(
        text=text, keep_session=True,
        transfer=common.TransferSettings(payload=common.PAYLOAD_INT4,
                                         selection=common.SELECTION_FRONT, keep_fraction=0.5))
    b1, session, sid, tokens = run_round("round 1 (Share, front half, int4)", stub.Share(share))
    if not sid or tokens != session["tokens"]:
        sys.exit(f"no session id, or prompt_tokens {tokens} != header tokens {session['tokens']}")
    held = (tokens - 1 + 1) // 2  # the front half of the shareable positions (all but the last)
    extra = pb.RefineRequest(session_id=sid, extra=pb.ExtraPositions(
        positions=[held, held + 1], payload=common.PAYLOAD_INT4))
    b2, _, _, _ = run_round("round 2 (Refine, 2 new positions, int4)", stub.Refine(extra))
    upgrade = pb.RefineRequest(session_id=sid, upgrade=pb.PrecisionUpgrade(
        positions=[0, 1, held], payload=common.PAYLOAD_INT4))
    b3, _, _, _ = run_round("round 3 (Refine, int4 residual of 3 held positions)",
                            stub.Refine(upgrade))
    print(f"request bytes: round 2 {extra.ByteSize()}, round 3 {upgrade.ByteSize()}; "
          f"total {b1 + b2 + b3} bytes over 3 rounds")
    try:
        list(stub.Refine(pb.RefineRequest(session_id="ab" * 16, extra=extra.extra)))
        sys.exit("an unknown session was served")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            sys.exit(f"unknown session: {e.code()} (want NOT_FOUND)")
        print("unknown session: NOT_FOUND")
    first = stub.Release(pb.ReleaseRequest(session_id=sid)).released
    again = stub.Release(pb.ReleaseRequest(session_id=sid)).released
    if (first, again) != (True, False):
        sys.exit(f"Release: released {first} then {again} (want True then False)")
    print("release: released, then released = false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
