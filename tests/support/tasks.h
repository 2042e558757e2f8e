// Generated questions for tests, sized by a model's tokenizer: the single-hop records
// the tiny models were trained on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/eval/tasks.h"
#include "common/model/tokenizer.h"

namespace kvstream::testing {

// `n` single-hop questions among `records` records each, record names of one token.
inline std::vector<eval::Example> SingleHopExamples(const model::Tokenizer& tokenizer, int records,
                                                    int n, uint64_t seed) {
  auto words = eval::LoadWords();
  if (!words.ok()) return {};
  eval::TaskGenerator gen(*words, [&tokenizer](const std::string& s) {
    auto ids = tokenizer.Encode(s, false);
    return ids.ok() ? static_cast<int>(ids->size()) : 0;
  });
  gen.set_single_token_names(true);
  eval::TaskOptions o;
  o.kind = "single";
  o.num_records = records;
  o.num_examples = n;
  o.seed = seed;
  return gen.Generate(o);
}

}  // namespace kvstream::testing
