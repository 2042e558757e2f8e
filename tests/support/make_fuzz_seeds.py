#!/usr/bin/env python3
"""Writes the hand-made seeds of the loader fuzz targets into their corpus folders.

Run from the repository root: python3 tests/support/make_fuzz_seeds.py
Seeds are named valid_* (must parse; the regression tests check it), bad_* (must be
refused) or wrong_type_* (quality tables with a field of the wrong JSON type, which once
escaped as an exception; now refused). What the
fuzzers found on top of these (hash-named files) was merged in with -merge=1; see
docs/fuzzing.md. Only the standard library is used: the SessionOpen seeds are encoded
by hand (protobuf wire format).
"""
import json
import os
import struct

ROOT = os.getcwd()


def write(folder, name, data):
    os.makedirs(os.path.join(ROOT, folder), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(ROOT, folder, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, header_pad=True):
    """tensors: [(name, dtype, shape, bytes)] -> a safetensors image."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    while header_pad and (8 + len(h)) % 8:
        h += b" "
    return struct.pack("<Q", len(h)) + h + data


def raw_header(text, data=b"", declared=None):
    h = text.encode()
    return struct.pack("<Q", len(h) if declared is None else declared) + h + data


def f32(*xs):
    return struct.pack("<%df" % len(xs), *xs)


# ---- plan strings ----------------------------------------------------------------------
PLAN = "common/codec/plan_fuzz_corpus"
for name, text in {
    "valid_raw": "raw",
    "valid_int8_zstd": "int8,zstd=3",
    "valid_layer0_f16": "k=int4/ch,v=int4/tok,L0=f16,zstd=3",
    "valid_group_override": "int4/g32,L0-1.k=int8",
    "valid_transforms": "k=int6/g32+ad8,v=f16+svd4,L2-3.v=bf16+sd,zstd=off",
    "valid_spec_only": "int2/ch",
    "bad_bits": "int9",
    "bad_descending": "L3-1=int4",
    "bad_key": "q=int4",
    "bad_float_axis": "f16/ch",
    "bad_zstd": "zstd=23",
    "bad_trailing_comma": "int4,",
    "bad_raw_transform": "raw+sd",
    "bad_group_zero": "int4/g0",
}.items():
    write(PLAN, name, text)

# ---- config.json -----------------------------------------------------------------------
CONFIG = "common/model/config_fuzz_corpus"
with open(os.path.join(ROOT, "testdata/models/scout/config.json"), "rb") as f:
    write(CONFIG, "valid_scout", f.read())
qwen7b = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584,
    "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28,
    "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 152064}
write(CONFIG, "valid_qwen7b", json.dumps(qwen7b, indent=2))
write(CONFIG, "valid_llama_newer_fields", json.dumps({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "head_dim": 6,
    "dtype": "float16", "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
    "eos_token_id": [3, 4], "bos_token_id": None, "tie_word_embeddings": True}))
write(CONFIG, "valid_mistral", json.dumps({
    "architectures": ["MistralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2}))
base = {"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
        "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}
for name, edit in {
    "bad_head_dim_zero": {"hidden_size": 2, "num_attention_heads": 4},
    "bad_kv_heads": {"num_attention_heads": 3, "num_key_value_heads": 2},
    "bad_rope_scaling": {"rope_scaling": {"type": "yarn"}},
    "bad_bos_negative": {"bos_token_id": -5},
    "bad_eos_string": {"eos_token_id": "</s>"},
    "bad_tie_string": {"tie_word_embeddings": "yes"},
    "bad_rope_theta_zero": {"rope_theta": 0},
    "bad_vocab_float": {"vocab_size": 10.5},
}.items():
    write(CONFIG, name, json.dumps({**base, **edit}))
write(CONFIG, "bad_architecture", json.dumps({**base, "architectures": ["GPT2LMHeadModel"]}))
write(CONFIG, "bad_not_object", "[1, 2]")

# ---- safetensors header ----------------------------------------------------------------
ST = "common/model/safetensors_fuzz_corpus"
write(ST, "valid_three_dtypes", safetensors(
    [("a.weight", "F32", [2, 2], f32(1, 2, 3, 4)), ("b", "F16", [3], b"\x00\x3c" * 3),
     ("c", "BF16", [1, 2], b"\x80\x3f" * 2)], metadata={"format": "pt"}))
write(ST, "valid_empty", safetensors([]))
write(ST, "valid_zero_size_tensor", safetensors([("z", "F32", [0, 4], b""),
                                                 ("s", "F32", [], f32(7))]))
with open(os.path.join(ROOT, "testdata/models/scout/model.safetensors"), "rb") as f:
    scout = f.read()
n = struct.unpack("<Q", scout[:8])[0]
write(ST, "bad_scout_truncated", scout[:8 + n + 64])  # the real header, data cut short
write(ST, "bad_overlap", raw_header(
    '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
    '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', f32(1, 2, 3)))
write(ST, "bad_dtype", raw_header('{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}',
                                  f32(1, 2, 3, 4)))
write(ST, "bad_size", raw_header('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}',
                                 f32(1, 2, 3, 4)))
write(ST, "bad_length_past_end", raw_header('{"x":1}', declared=1000))
write(ST, "bad_tiny", b"abc")

# ---- model.safetensors.index.json --------------------------------------------------------
INDEX = "common/model/safetensors_index_fuzz_corpus"
write(INDEX, "valid_two_shards", json.dumps({
    "metadata": {"total_size": 123}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}}, indent=2))
write(INDEX, "valid_empty_map", '{"weight_map": {}}')
for name, value in {"bad_dotdot": "..", "bad_slash": "../a.safetensors", "bad_empty": "",
                    "bad_dot": ".", "bad_nul": "a\u0000b", "bad_number": 7}.items():
    write(INDEX, name, json.dumps({"weight_map": {"x": "a.safetensors", "y": value}}))
write(INDEX, "bad_not_object", '{"weight_map": ["a.safetensors"]}')

# ---- tokenizer.json ----------------------------------------------------------------------
TOK = "common/model/tokenizer_fuzz_corpus"


def byte_to_unicode():
    out, extra = [], 0
    for b in range(256):
        printable = 33 <= b <= 126 or 161 <= b <= 172 or b >= 174
        out.append(chr(b) if printable else chr(256 + extra))
        if not printable:
            extra += 1
    return out


B2U = byte_to_unicode()
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer(merges=(), added=(), nfc=True, pre="sequence", merge_arrays=False,
              ignore_merges=False, drop_byte=None, extra_vocab=None):
    vocab = {ch: i for i, ch in enumerate(B2U) if i != drop_byte}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab) + (1 if drop_byte is not None else 0))
    vocab.update(extra_vocab or {})
    split = {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated",
             "invert": False}
    pre_tok = {"sequence": {"type": "Sequence", "pretokenizers": [
        split, {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                "use_regex": False}]}, "split": split, "none": None}[pre]
    return json.dumps({
        "version": "1.0",
        "added_tokens": [{"id": i, "content": c, "special": True} for i, c in added],
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": pre_tok,
        "model": {"type": "BPE", "ignore_merges": ignore_merges, "vocab": vocab,
                  "merges": [[a, b] if merge_arrays else a + " " + b for a, b in merges]},
    }, ensure_ascii=False)


G = B2U[32]  # the byte-level character of a space
MERGES = [(G, "t"), ("h", "e"), (G + "t", "he"), ("o", "r"), (G, "w"), (G + "w", "or"),
          ("l", "d"), ("H", "e"), ("l", "l"), ("He", "ll")]
ADDED = [(300, "<|endoftext|>"), (301, "<|im_start|>"), (302, "<|im_end|>")]
write(TOK, "valid_qwen_like", tokenizer(MERGES, ADDED) + "\0<|im_start|>Hello the world<|im_end|>")
write(TOK, "valid_plain_with_nul_text", tokenizer(MERGES, nfc=False, pre="split")
      + "\0the\0world\n\n  \tcaf\u00e9")
write(TOK, "valid_no_pre_tokenizer", tokenizer(MERGES, pre="none", nfc=False) + "\0Hello world")
write(TOK, "valid_merge_arrays_ignore_merges",
      tokenizer(MERGES, merge_arrays=True, ignore_merges=True) + "\0 the world")
write(TOK, "valid_nfc_text", tokenizer(MERGES) + "\0e\u0301 A\u030a \U0001F600")
write(TOK, "bad_missing_byte", tokenizer(MERGES, drop_byte=65))
write(TOK, "valid_nfc_nul_text", tokenizer(MERGES) + "\0the\0world")
write(TOK, "bad_duplicate_id", tokenizer(MERGES, extra_vocab={"xyz": 97}))
write(TOK, "bad_added_takes_vocab_id", tokenizer(MERGES, [(65, "<|x|>")]))
write(TOK, "bad_ignore_merges_type", tokenizer(MERGES).replace('"ignore_merges": false',
                                                              '"ignore_merges": 1'))
write(TOK, "bad_sequence_without_list", json.dumps({
    "model": {"type": "BPE", "vocab": {ch: i for i, ch in enumerate(B2U)}, "merges": []},
    "pre_tokenizer": {"type": "Sequence"}}, ensure_ascii=False))
write(TOK, "bad_merge_unknown", tokenizer([("q", "z")]).replace('"qz"', '"zq"'))

# ---- projection header -----------------------------------------------------------------
PROJ = "common/model/projection_header_fuzz_corpus"


def proj_header(src=(2, 1, 2), tgt=(2, 1, 4), layer_map=([0], [0, 1]), joint=False):
    model = lambda fp, d: {"fingerprint": fp, "num_layers": d[0], "num_kv_heads": d[1],
                           "head_dim": d[2], "rope_theta": 10000.0}
    return {"format": 1, "source": model("qwen2-aaaa", src), "target": model("qwen2-bbbb", tgt),
            "layer_map": [list(m) for m in layer_map], "joint_inputs": joint,
            "layers": [{"ridge_k": 1e-4, "ridge_v": 1e-3, "r2_k": 0.9, "r2_v": 0.5,
                        "cka_k": 0.99, "cka_v": 0.7} for _ in layer_map],
            "calibration": {"prompts": 8, "held_out": 2, "positions": 1000,
                            "description": "seed"}}


def proj_file(h, drop=None, wrong_rows=False):
    d_out = h["target"]["num_kv_heads"] * h["target"]["head_dim"]
    s = h["source"]
    tensors = []
    for t, m in enumerate(h["layer_map"]):
        d_in = (2 if h["joint_inputs"] else 1) * len(m) * s["num_kv_heads"] * s["head_dim"]
        rows = d_in + 1 - (1 if wrong_rows and t == 0 else 0)
        for kind in "kv":
            name = "layers.%d.%s" % (t, kind)
            if name != drop:
                tensors.append((name, "F32", [rows, d_out], f32(*([0.5] * (rows * d_out)))))
    return safetensors(tensors, metadata={"kvstream_projection": json.dumps(h)})


with open(os.path.join(ROOT, "testdata/projections/scout_to_large.safetensors"), "rb") as f:
    real = f.read()
n = struct.unpack("<Q", real[:8])[0]
real_header = json.loads(real[8:8 + n])["__metadata__"]["kvstream_projection"]
write(PROJ, "valid_text_scout_to_large", b"\0" + real_header.encode())
write(PROJ, "valid_text_small", b"\0" + json.dumps(proj_header()).encode())
write(PROJ, "valid_file_small", b"\1" + proj_file(proj_header()))
write(PROJ, "valid_file_joint", b"\1" + proj_file(proj_header(joint=True)))
write(PROJ, "bad_file_missing_map", b"\1" + proj_file(proj_header(), drop="layers.1.v"))
write(PROJ, "bad_file_wrong_rows", b"\1" + proj_file(proj_header(), wrong_rows=True))
write(PROJ, "bad_file_not_projection",
      b"\1" + safetensors([("w", "F32", [1], f32(1))], metadata={"format": "pt"}))
write(PROJ, "bad_text_layer_out_of_range",
      b"\0" + json.dumps(proj_header(layer_map=([0], [2]))).encode())
write(PROJ, "bad_text_layer_twice",
      b"\0" + json.dumps(proj_header(layer_map=([0], [1, 1]))).encode())
write(PROJ, "bad_text_odd_head_dim", b"\0" + json.dumps(proj_header(src=(2, 1, 3))).encode())
write(PROJ, "bad_text_format", b"\0" + json.dumps({**proj_header(), "format": 2}).encode())

# ---- quality tables --------------------------------------------------------------------
QT = "common/control/quality_table_fuzz_corpus"
for table in ("tiny_needle512", "tiny_mixed", "tiny2k_mixed"):
    with open(os.path.join(ROOT, "testdata/quality/%s.json" % table), "rb") as f:
        write(QT, "valid_" + table, f.read())
write(QT, "bad_gate_twice", json.dumps([
    {"mode": "kv", "spec": "int4", "quality": 0.9, "kv_min_confidence": 0.1},
    {"mode": "kv", "spec": "int8", "quality": 1.0, "kv_min_confidence": 0.5}]))
write(QT, "bad_gate_on_text", json.dumps([{"mode": "text", "quality": 1.0, "kv_min_confidence": 0.5}]))
write(QT, "wrong_type_gate_string",
      json.dumps([{"mode": "kv", "spec": "int4", "quality": 0.9, "kv_min_confidence": "high"}]))
write(QT, "bad_scout_twice", json.dumps([
    {"mode": "kv", "spec": "int4", "quality": 0.9, "scout": "qwen2-a"},
    {"mode": "text", "quality": 1.0, "scout": "qwen2-b"}]))
write(QT, "wrong_type_scout_number", json.dumps([{"mode": "kv", "quality": 0.9, "scout": 7}]))
write(QT, "valid_kinds_merged", json.dumps([
    {"mode": "kv", "spec": "int4", "kind": "needle", "quality": 0.9},
    {"mode": "kv", "spec": "int4", "kind": "single", "quality": 0.4},
    {"mode": "kv", "spec": "int8", "kind": "single", "quality": 1.0}]))
write(QT, "valid_eval_json_f1", json.dumps([
    {"mode": "kv", "selector": "q2c", "retention": 0.25, "spec": "k=int4/ch,v=int4,L0=f16",
     "f1": 0.61, "em": 0.5},
    {"mode": "projected", "spec": "int4", "f1": 0.55},
    {"mode": "text", "quality": 1}]))
write(QT, "valid_length_ranges", json.dumps([
    {"mode": "kv", "spec": "int4", "kind": "needle", "tokens": [400, 600], "quality": 1.0},
    {"mode": "kv", "spec": "int4", "kind": "needle", "tokens": [900, 1150], "quality": 0.9},
    {"mode": "kv", "spec": "int4", "kind": "single", "tokens": [330, 500], "quality": 0.95},
    {"mode": "text", "kind": "single", "tokens": [850, 1100], "quality": 0.8},
    {"mode": "text", "quality": 1}]))
for name, table in {
    "bad_tokens_reversed": [{"mode": "kv", "tokens": [600, 400], "quality": 1}],
    "bad_tokens_not_a_pair": [{"mode": "kv", "tokens": 512, "quality": 1}],
    "bad_empty": [],
    "bad_mode": [{"mode": "adaptive", "quality": 1}],
    "bad_retention": [{"mode": "scout", "selector": "q2c", "retention": 0, "quality": 1}],
    "bad_spec": [{"mode": "kv", "spec": "int9", "quality": 1}],
    "bad_selector": [{"mode": "scout", "selector": "best", "quality": 1}],
    "bad_no_quality": [{"mode": "kv"}],
    "bad_kind_empty": [{"mode": "kv", "kind": "", "quality": 1}],
    "wrong_type_selector_number": [{"mode": "scout", "selector": 1, "quality": 1}],
    "wrong_type_retention_string": [{"mode": "scout", "retention": "half", "quality": 1}],
    "wrong_type_spec_number": [{"mode": "kv", "spec": 4, "quality": 1}],
}.items():
    write(QT, name, json.dumps(table))

# ---- SessionOpen -----------------------------------------------------------------------
SO = "common/pipeline/session_open_fuzz_corpus"


def varint(v):
    v &= (1 << 64) - 1
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def field(num, value):
    if isinstance(value, float):
        return varint(num << 3 | 1) + struct.pack("<d", value)
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def positions(ps):
    out, prev = b"", -1
    for p in ps:
        out += varint(p if prev < 0 else p - prev)
        prev = p
    return out


def session_open(mode, control=0, **f):
    msg = field(1, "s-1") + field(2, mode)
    order = ["model_fingerprint", "model_name", "dims", "prompt_tokens", "last_token",
             "num_slots", "next_position", "kept_positions", "max_tokens", "temperature",
             "top_p", "seed"]
    for num, key in enumerate(order, start=3):
        if key not in f:
            continue
        v = f[key]
        if key == "dims":
            v = b"".join(field(i + 1, d) for i, d in enumerate(v))
        elif key == "prompt_tokens":
            v = b"".join(varint(t) for t in v)  # packed
        msg += field(num, v)
    return bytes([control]) + msg


KV, SCOUT, TEXT, PROJECTED = 1, 2, 3, 5
kept = [0, 1, 5, 9, 10]
write(SO, "valid_kv", session_open(KV, model_fingerprint="qwen2-aaaa", dims=[4, 2, 24],
                                   last_token=17, num_slots=5, next_position=11,
                                   kept_positions=positions(kept), max_tokens=16,
                                   temperature=0.7, top_p=0.9, seed=42))
write(SO, "valid_projected", session_open(PROJECTED, model_name="scout", dims=[2, 1, 16],
                                          last_token=3, num_slots=3, next_position=3,
                                          kept_positions=positions([0, 1, 2])))
write(SO, "valid_scout_kept", session_open(SCOUT, model_name="scout",
                                           prompt_tokens=[1, 2, 3, 4, 5, 6],
                                           num_slots=2, kept_positions=positions([0, 4])))
write(SO, "valid_text", session_open(TEXT, model_name="scout", prompt_tokens=[5, 9, 2047]))
write(SO, "valid_text_short_context", session_open(TEXT, control=1, model_name="scout",
                                                   prompt_tokens=list(range(40)), max_tokens=23))
write(SO, "valid_kv_small_limits", session_open(KV, control=2, dims=[4, 2, 24], last_token=0,
                                                num_slots=1, next_position=1,
                                                kept_positions=positions([0])))
# Control bit 2: a Commit whose answer check is the SessionOpen's prompt_tokens and seed.
write(SO, "valid_projected_check", session_open(PROJECTED, control=4, model_name="scout",
                                                dims=[2, 1, 16], prompt_tokens=[7, 8, 9, 3],
                                                last_token=3, num_slots=3, next_position=3,
                                                kept_positions=positions([0, 1, 2]), seed=11))
write(SO, "bad_check_in_kv", session_open(KV, control=4, dims=[4, 2, 24], last_token=1,
                                          prompt_tokens=[4, 1], num_slots=1, next_position=1,
                                          kept_positions=positions([0]), seed=5))
write(SO, "bad_check_prompt_short", session_open(PROJECTED, control=4, model_name="scout",
                                                 dims=[2, 1, 16], prompt_tokens=[9, 3],
                                                 last_token=3, num_slots=3, next_position=3,
                                                 kept_positions=positions([0, 1, 2]), seed=11))
write(SO, "bad_dims", session_open(KV, dims=[4, 2, 32], last_token=1, num_slots=1,
                                   next_position=1, kept_positions=positions([0])))
write(SO, "bad_mode", session_open(4, model_name="scout", prompt_tokens=[1, 2]))
write(SO, "bad_position_limit", session_open(TEXT, control=1, model_name="scout",
                                             prompt_tokens=list(range(40)), max_tokens=25))
write(SO, "bad_kept_past_prompt", session_open(SCOUT, model_name="scout",
                                               prompt_tokens=[1, 2, 3], num_slots=1,
                                               kept_positions=positions([2])))
write(SO, "bad_slots_past_position", session_open(KV, dims=[4, 2, 24], last_token=1,
                                                  num_slots=4, next_position=3,
                                                  kept_positions=positions([0, 1, 2, 3])))
write(SO, "bad_token_id", session_open(TEXT, model_name="scout", prompt_tokens=[1, 2048]))
write(SO, "bad_top_p", session_open(TEXT, model_name="scout", prompt_tokens=[1, 2], top_p=1.5))
write(SO, "bad_max_tokens", session_open(TEXT, model_name="scout", prompt_tokens=[1, 2],
                                         max_tokens=513))
write(SO, "bad_trailing_position_bytes", session_open(KV, dims=[4, 2, 24], last_token=1,
                                                      num_slots=1, next_position=5,
                                                      kept_positions=positions([0, 1])))

# ---- Uplink (the cloud's UplinkFrame) --------------------------------------------------
UP = "common/net/uplink_frame_fuzz_corpus"


def fixed32(num, v):
    return varint(num << 3 | 5) + struct.pack("<I", v)


def chunk_fields(payload=b"\x01\x02\x03" * 70):
    header = (field(1, "s-1") + field(2, 4) + field(3, 0) + field(4, 2) + field(6, 3)
              + field(7, positions([0, 2, 5])) + field(8, 2) + field(9, 8))
    return header, field(15, payload) + fixed32(16, 0x1234ABCD)


def uplink_chunk(control, chunk):
    return bytes([control]) + field(2, chunk)


h, rest = chunk_fields()
write(UP, "valid_chunk", uplink_chunk(0x45, h + rest))
write(UP, "valid_chunk_byte_slices", uplink_chunk(0, h + rest))
write(UP, "valid_chunk_payload_first", uplink_chunk(3, rest + h))
write(UP, "valid_open", bytes([5]) + field(1, field(1, "s-1")))
write(UP, "valid_commit", bytes([5]) + field(3, field(1, 4)))
write(UP, "valid_payload_twice", uplink_chunk(9, h + rest + field(15, "later")))
write(UP, "valid_chunk_then_open", uplink_chunk(9, h + rest) + field(1, field(1, "s-2")))
write(UP, "valid_chunk_twice", uplink_chunk(9, h + rest) + field(2, field(2, 5)))
write(UP, "valid_unknown_fields", uplink_chunk(17, h + varint(99 << 3) + varint(7)
                                               + varint(100 << 3 | 1) + b"\0" * 8 + rest))
# A five-byte tag past 32 bits that protobuf cuts down to the payload's tag.
write(UP, "valid_disguised_payload_tag", uplink_chunk(9, h + rest + b"\xfa\x80\x80\x80\x10"
                                                      + varint(3) + b"xyz"))
write(UP, "bad_truncated", uplink_chunk(9, h + rest)[:-40])
write(UP, "bad_six_byte_tag", uplink_chunk(9, h + b"\xfa\x80\x80\x80\x80\x00" + varint(3)
                                           + b"xyz"))
write(UP, "bad_field_zero", uplink_chunk(9, h + varint(0) + varint(1) + rest))
write(UP, "bad_open_group", uplink_chunk(9, h + varint(20 << 3 | 3) + rest))
