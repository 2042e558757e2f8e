// A request as the pipeline runs it (pipeline.h), in a header free of the model runtime
// so that policy resolution (edge/policy.h) can produce one without linking it.
#pragma once

#include <cstdint>
#include <string>

#include "common/codec/spec.h"
#include "common/pipeline/mode.h"
#include "common/select/select.h"

namespace kvstream::pipeline {

// A request as decided (by the client's policy or the controller): the mode that answers
// it and what is sent for it.
struct Request {
  Mode mode = kvstream::v1::MODE_KV;  // KV, PROJECTED, SCOUT or TEXT
  select::Policy selector = select::Policy::kFull;
  double retention = 1;
  uint64_t seed = 0;        // the random selector's and the receiver's sampling
  codec::Plan plan;         // kv / projected: how the cache is encoded
  std::string cloud_model;  // every mode but kv: the model that answers
  uint32_t max_tokens = 0;  // 0: the receiver's default
  double temperature = 0;
  double top_p = 0;  // 0: 1
  int snapkv_window = 32;
  uint64_t chunk_bytes = 1 << 20;  // largest encoded chunk payload
  int encode_threads = 1;          // threads encoding the chunks (the same chunks for any count)
  // kv / projected without a selector: one layer per chunk, so that a sender can send
  // each layer while its prefill computes the next (pipeline.h, CanStreamLayers).
  bool layer_chunks = false;
  // projected: the sender puts an answer check in Commit (its first answer token and the
  // prompt), so the receiver answers from the prompt when the projected cache would
  // start the answer otherwise (MakeAnswerCheck).
  bool answer_check = false;
  bool selects() const { return selector != select::Policy::kFull; }
  // The whole cache of a mode that sends one: no selector waits on every layer's
  // statistics, so each layer can go as soon as the prefill has computed it.
  // A progressive plan sends tier by tier, not layer by layer.
  bool CanStreamLayers() const { return SendsCache(mode) && !selects() && plan.tiers == 0; }
};

}  // namespace kvstream::pipeline
