// Token selection: which context positions of a prompt to keep in the KV cache.
//
// Input is what a prefill of the scout model measured (AttentionStats, produced by
// common/model) and where the prompt's parts lie (PromptSpans, produced by the chat
// template). Output is the sorted list of prompt positions to keep. Every non-context
// token (template, question) is always kept; the policy only chooses among context
// tokens, keeping round(retention * context_tokens) of them.
//
// One selection serves all layers and heads: the kept positions are sent once per
// session (and in scout mode they are all that is sent), so per-head variants of the
// papers' methods are aggregated over layers and heads here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::select {

// Token ranges [begin, end) of one prompt.
struct PromptSpans {
  int num_tokens = 0;
  int context_begin = 0;
  int context_end = 0;
  int question_begin = 0;
  int question_end = 0;
  int context_tokens() const { return context_end - context_begin; }
};

// Attention probabilities (after softmax) from a prefill, summed over a set of query
// rows, for every key position. Each array is [num_layers][num_heads][num_tokens] row
// major (query heads, not KV heads); an array the prefill did not collect is empty.
// The rows cover the whole prompt, its last token included (model::PrefillForSelection):
// on the tiny scout the record lookup happens at exactly that row, and SnapKV's window
// ends there. The statistics may so cover more tokens than the spans a selection is
// made over (the cache, without the last token).
struct AttentionStats {
  int num_layers = 0;
  int num_heads = 0;
  int num_tokens = 0;
  std::vector<float> question;       // queries in the question span            (q2c-question)
  std::vector<float> question_tail;  // the question through the last prompt row (q2c)
  std::vector<float> window;         // queries in the last `window_size` rows   (SnapKV)
  std::vector<float> cumulative;     // every query row (causal)                 (H2O)
  int window_size = 0;

  size_t size() const { return static_cast<size_t>(num_layers) * num_heads * num_tokens; }
  float at(const std::vector<float>& a, int layer, int head, int token) const {
    return a[(static_cast<size_t>(layer) * num_heads + head) * num_tokens + token];
  }
};

// kQ2C scores context tokens by the attention of the question and every row after it
// (the answer template and the last prompt token, where the lookup happens);
// kQ2CQuestion by the question rows alone, as the research report defines Q2C.
enum class Policy { kFull, kQ2C, kQ2CQuestion, kSnapKV, kH2O, kRandom };
enum class Pooling { kMax, kAvg };

struct SelectOptions {
  Policy policy = Policy::kQ2C;
  double retention = 1.0;  // share of context tokens kept, 0..1
  int sink_tokens = 0;     // first N context tokens always kept (attention sinks)
  // SnapKV: 1-D pooling of the window votes along the sequence (odd kernel).
  int snapkv_kernel = 5;
  Pooling snapkv_pooling = Pooling::kMax;
  // H2O: share of the budget given to the most recent context tokens.
  double h2o_recent_share = 0.5;
  uint64_t seed = 0;  // random
};

struct Selection {
  std::vector<int32_t> kept;  // prompt positions, strictly increasing
  int context_total = 0;
  int context_kept = 0;
  // The same positions by importance: every kept token outside the context first (in
  // prompt order), then the sinks (`always_kept` tokens so far), then the context
  // tokens the policy chose, most important first (q2c, q2c-question, snapkv: by score;
  // h2o: the recent window, then the heavy hitters by score; random: in draw order;
  // full: in prompt order). A progressive sender sends them in this order.
  std::vector<int32_t> ranked;
  int always_kept = 0;
};

absl::string_view PolicyName(Policy p);
absl::StatusOr<Policy> ParsePolicy(absl::string_view name);

// Context tokens kept at `retention`: round(retention * n), within [0, n].
int ContextBudget(double retention, int context_tokens);

absl::StatusOr<Selection> Select(const AttentionStats& stats, const PromptSpans& spans,
                                 const SelectOptions& options);

// Every prompt position in [0, spans.num_tokens), ranked in prompt order (no selector).
Selection KeepAll(const PromptSpans& spans);

// A selection's kept positions in `n` importance tiers (progressive sending): the
// ranked context tokens split as evenly as `n` allows, most important first (earlier
// tiers take the remainder), with every always-kept token in the first tier; each tier
// in prompt order. Fewer tiers when there are fewer ranked context tokens than `n`.
struct Tiers {
  std::vector<int32_t> positions;  // tier after tier
  std::vector<uint32_t> sizes;
};
Tiers SplitTiers(const Selection& selection, int n);

}  // namespace kvstream::select
