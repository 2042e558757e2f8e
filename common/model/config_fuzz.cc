// libFuzzer target for config.json (ModelConfig::FromJson). Input: the file's text.
//
// Invariants checked on every config that parses: a supported architecture; every size
// positive and in int range; num_attention_heads a multiple of num_key_value_heads;
// rms_norm_eps and rope_theta positive; token ids non-negative; and ToJson() parses back
// to a config equal in every field.
//
// Build and run: docs/fuzzing.md. The committed corpus (config_fuzz_corpus/) also runs as
// a regression test (tests/common/model/config_fuzz_corpus_test.cc).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/base/fuzz_check.h"
#include "common/model/config.h"

namespace {

using kvstream::model::ModelConfig;

bool Same(const ModelConfig& a, const ModelConfig& b) {
  return a.architecture == b.architecture && a.vocab_size == b.vocab_size &&
         a.hidden_size == b.hidden_size && a.intermediate_size == b.intermediate_size &&
         a.num_layers == b.num_layers && a.num_heads == b.num_heads &&
         a.num_kv_heads == b.num_kv_heads && a.head_dim == b.head_dim &&
         a.max_position_embeddings == b.max_position_embeddings &&
         a.rms_norm_eps == b.rms_norm_eps && a.rope_theta == b.rope_theta &&
         a.tie_word_embeddings == b.tie_word_embeddings && a.torch_dtype == b.torch_dtype &&
         a.bos_token_id == b.bos_token_id && a.eos_token_ids == b.eos_token_ids &&
         a.rope_scaling == b.rope_scaling && a.qk_norm == b.qk_norm;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = ModelConfig::FromJson(text, "fuzz");
  if (!c.ok()) return 0;
  kvstream::base::FuzzCheck(c->architecture == "Qwen2ForCausalLM" ||
                            c->architecture == "LlamaForCausalLM" ||
                            c->architecture == "MistralForCausalLM");
  for (int v : {c->vocab_size, c->hidden_size, c->intermediate_size, c->num_layers, c->num_heads,
                c->num_kv_heads, c->head_dim, c->max_position_embeddings}) {
    kvstream::base::FuzzCheck(v > 0);
  }
  kvstream::base::FuzzCheck(c->num_heads % c->num_kv_heads == 0);
  kvstream::base::FuzzCheck(c->rms_norm_eps > 0 && c->rope_theta > 0);
  kvstream::base::FuzzCheck(c->bos_token_id >= -1);
  for (int id : c->eos_token_ids) kvstream::base::FuzzCheck(id >= 0);
  auto again = ModelConfig::FromJson(c->ToJson(), "fuzz ToJson");
  kvstream::base::FuzzCheck(again.ok() && Same(*c, *again));
  return 0;
}
