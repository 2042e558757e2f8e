// Synthetic retrieval tasks, written and read as SQuAD v2 JSON (so a real SQuAD file can
// be used wherever a generated one is), and the SQuAD scorer.
//
// Kinds (the answer always sits somewhere in a long context, so selection and
// quantization errors show up as wrong answers):
//   single  many records "The code of <name> is <value>."; the question asks one.
//   multi   records "The town of <name> is <town>." and "The code of <town> is <value>.";
//           the question ("What is the code of the town of <name>?") needs both hops
//           and is answered "<town>: <value>", the bridge first, one lookup a token
//           (not a span of the context: ToSquadJson writes its answer_start as -1, and
//           SQuAD F1 gives the right town alone half credit; exact match needs both).
//   multi_lives  the multi-hop format the committed models were trained with:
//           "<Name> lives in <town>.", asked "What is the code of the town where <Name>
//           lives?" and answered "<value>" (kept so that their training regenerates).
//   needle  one record hidden in distractor sentences, padded to a target length.
// Names, towns and distractor words come from a word list (Debian's wamerican). Values
// are words too: with a TokenCounter, only words the tokenizer keeps as one token after
// a space, as they stand in the records (so the answer is one copy from the context);
// without one, 3-digit numbers.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvstream::eval {

struct Example {
  std::string id;
  std::string kind;  // single | multi | multi_lives | needle | squad
  std::string context;
  std::string question;
  std::vector<std::string> answers;
  int target_tokens = 0;  // length the context was generated for (0: not applicable)
  int num_records = 0;    // single / multi: records in the context (multi: both kinds)
  // Every (question, answer) the context answers, the main one included (generated
  // tasks only): training asks several per sequence.
  std::vector<std::pair<std::string, std::string>> all_qas;
  // (name, value) of every "The code of <name> is <value>." record in the context
  // (generated tasks only): training restates some of them (train-tiny --recap).
  std::vector<std::pair<std::string, std::string>> records;
};

struct TaskOptions {
  std::string kind = "single";
  int num_examples = 100;
  uint64_t seed = 1;
  int num_records = 20;     // single / multi: records in the context
  int target_tokens = 512;  // needle: context length in tokens
  int value_digits = 3;
  // Upper ends of ranges (0: fixed at the value above): each example draws its record
  // count from [num_records, num_records_max] and its needle length from [target_tokens,
  // target_tokens_max], uniformly and from its own seed, so a benchmark cell samples many
  // prompt lengths (and RoPE phases of the answer) instead of repeating one.
  int num_records_max = 0;
  int target_tokens_max = 0;
};

// The kinds TaskGenerator::One makes: single, multi, multi_lives, needle.
bool IsGeneratedKind(absl::string_view kind);
// What an error says the kinds are.
inline constexpr char kGeneratedKinds[] = "single, multi, multi_lives or needle";

// A count or an inclusive range as written in flags: "72" or "64-80". INVALID_ARGUMENT
// naming `what` otherwise.
absl::Status ParseRange(absl::string_view text, absl::string_view what, int* lo, int* hi);

// Counts tokens of a text (e.g. a tokenizer); used to pad needle contexts to length.
using TokenCounter = std::function<int(const std::string&)>;

// Lowercase ASCII words of 3-8 letters from `path`, deduplicated, sorted.
absl::StatusOr<std::vector<std::string>> LoadWords(
    const std::string& path = "/usr/share/dict/words");

class TaskGenerator {
 public:
  TaskGenerator(std::vector<std::string> words, TokenCounter counter = nullptr);
  // The value vocabulary in use (empty: numbers).
  const std::vector<std::string>& values() const { return values_; }
  // Record names (and towns) drawn from single-token words instead of the whole word
  // list, so recall is a match of one token rather than of a multi-token name whose last
  // piece is often a common suffix. The single-token words are split in two disjoint
  // pools, a third for values and the rest for names. Needs a TokenCounter; without one
  // (or with fewer than kMinSingleTokenWords such words) nothing changes.
  static constexpr size_t kMinSingleTokenWords = 150;
  void set_single_token_names(bool on);
  bool single_token_names() const { return single_token_names_; }
  std::vector<Example> Generate(const TaskOptions& options) const;
  // One example of `kind`, drawing from the caller's RNG state (for training streams).
  Example One(const std::string& kind, uint64_t seed, int num_records, int target_tokens,
              int value_digits = 3) const;

 private:
  std::string Value(std::mt19937_64& rng, int digits) const;
  const std::vector<std::string>& NamePool() const;
  void SingleHop(std::mt19937_64& rng, int num_records, int value_digits, Example& ex) const;
  void MultiHop(std::mt19937_64& rng, int num_records, int value_digits, bool bridge,
                Example& ex) const;
  void Needle(std::mt19937_64& rng, int target_tokens, int value_digits, Example& ex) const;
  std::vector<std::string> words_;
  std::vector<std::string> values_;
  std::vector<std::string> names_;  // single-token names (set_single_token_names)
  TokenCounter counter_;
  bool single_token_names_ = false;
};

// SQuAD v2 JSON: {"version": "v2.0", "data": [{"title", "paragraphs": [{"context",
// "qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}.
std::string ToSquadJson(const std::vector<Example>& examples);
// Reads SQuAD v1/v2 JSON; unanswerable questions (is_impossible) are skipped.
absl::StatusOr<std::vector<Example>> FromSquadJson(const std::string& json,
                                                   const std::string& source);
absl::StatusOr<std::vector<Example>> LoadSquadFile(const std::string& path);

// SQuAD scoring: answers normalized (lowercase, punctuation and the articles a/an/the
// removed, whitespace collapsed); best over the gold answers.
std::string NormalizeAnswer(const std::string& s);
double ExactMatch(const std::string& prediction, const std::vector<std::string>& golds);
double TokenF1(const std::string& prediction, const std::vector<std::string>& golds);

}  // namespace kvstream::eval
