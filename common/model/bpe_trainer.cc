#include "common/model/bpe_trainer.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/model/tokenizer.h"

namespace kvstream::model {
namespace {

using nlohmann::json;

json Skeleton(const json& vocab, const json& merges, const std::vector<std::string>& specials,
              int first_special_id) {
  json added = json::array();
  for (size_t i = 0; i < specials.size(); ++i) {
    added.push_back({{"id", first_special_id + static_cast<int>(i)},
                     {"content", specials[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  json split = json::object();
  split["type"] = "Split";
  split["pattern"]["Regex"] = std::string(kQwen2Pattern);
  split["behavior"] = "Isolated";
  split["invert"] = false;
  json byte_level = json::object();
  byte_level["type"] = "ByteLevel";
  byte_level["add_prefix_space"] = false;
  byte_level["trim_offsets"] = false;
  byte_level["use_regex"] = false;
  json pre = json::object();
  pre["type"] = "Sequence";
  pre["pretokenizers"] = json::array({split, byte_level});
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", {{"type", "NFC"}}},
          {"pre_tokenizer", pre},
          {"post_processor", byte_level},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", ""},
            {"end_of_word_suffix", ""},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", merges}}}};
}

}  // namespace

const char kQwen2Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

absl::StatusOr<std::string> TrainBpeTokenizer(const std::vector<std::string>& texts,
                                              const BpeTrainOptions& o) {
  const int n_special = static_cast<int>(o.special_tokens.size());
  if (o.vocab_size < 256 + n_special) {
    return absl::InvalidArgumentError(absl::StrCat("vocab size must be >= ", 256 + n_special,
                                                   " (bytes + special tokens), found ",
                                                   o.vocab_size));
  }
  // Byte alphabet: id b is byte b's byte-level character.
  std::vector<std::string> id_to_str(256);
  for (int b = 0; b < 256; ++b) id_to_str[b] = CodepointToUtf8(ByteToUnicode()[b]);
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[id_to_str[b]] = b;

  // Pre-tokenize with the real splitter (a merge-less tokenizer with the same regex).
  ASSIGN_OR_RETURN(
      auto splitter,
      Tokenizer::FromJson(Skeleton(vocab, json::array(), {}, 256).dump(), "bpe-trainer"));
  std::unordered_map<std::string, int64_t> counts;
  for (const std::string& t : texts) {
    ASSIGN_OR_RETURN(std::vector<std::string> pieces, splitter->PreTokenize(t));
    for (std::string& p : pieces) ++counts[std::move(p)];
  }
  struct Word {
    std::vector<int> syms;
    int64_t count;
  };
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());  // deterministic order
  std::vector<Word> words;
  for (const auto& [piece, c] : sorted) {
    Word w{{}, c};
    for (unsigned char b : piece) w.syms.push_back(b);
    words.push_back(std::move(w));
  }

  json merges = json::array();
  const int target = o.vocab_size - n_special;
  while (static_cast<int>(id_to_str.size()) < target) {
    std::map<std::pair<int, int>, int64_t> pairs;
    for (const Word& w : words) {
      for (size_t i = 0; i + 1 < w.syms.size(); ++i) pairs[{w.syms[i], w.syms[i + 1]}] += w.count;
    }
    // Most frequent pair; ties broken by the pair's strings, so runs are reproducible.
    const std::pair<int, int>* best = nullptr;
    int64_t best_count = 0;
    for (const auto& [pair, c] : pairs) {
      if (c > best_count || (c == best_count && best != nullptr &&
                             std::tie(id_to_str[pair.first], id_to_str[pair.second]) <
                                 std::tie(id_to_str[best->first], id_to_str[best->second]))) {
        best = &pair;
        best_count = c;
      }
    }
    if (best == nullptr || best_count < o.min_frequency) break;
    const auto [a, b] = *best;
    const int merged = static_cast<int>(id_to_str.size());
    const std::string merged_str = id_to_str[a] + id_to_str[b];
    if (vocab.contains(merged_str)) break;  // cannot happen with a byte alphabet; guard anyway
    id_to_str.push_back(merged_str);
    vocab[merged_str] = merged;
    merges.push_back(id_to_str[a] + " " + id_to_str[b]);
    for (Word& w : words) {
      std::vector<int> next;
      next.reserve(w.syms.size());
      for (size_t i = 0; i < w.syms.size(); ++i) {
        if (i + 1 < w.syms.size() && w.syms[i] == a && w.syms[i + 1] == b) {
          next.push_back(merged);
          ++i;
        } else {
          next.push_back(w.syms[i]);
        }
      }
      w.syms.swap(next);
    }
  }
  return Skeleton(vocab, merges, o.special_tokens, static_cast<int>(id_to_str.size())).dump(1) +
         "\n";
}

}  // namespace kvstream::model
