// kvstream codec: the public surface of common/codec.
//
//   spec.h      TensorSpec / LayerSpec / Plan and the plan-string grammar
//   quantize.h  one tensor [heads, tokens, head_dim] <-> bytes, and the wire-size formula
//   chunk.h     a layer range x token run <-> kvstream.v1.KvChunk (zstd, CRC32C, positions)
//
// The codec works on contiguous buffers and shapes; it never sees a torch::Tensor.
#pragma once

#include "common/codec/chunk.h"
#include "common/codec/quantize.h"
#include "common/codec/spec.h"
