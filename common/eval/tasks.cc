#include "common/eval/tasks.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/status.h"

namespace kvstream::eval {
namespace {

using nlohmann::json;

std::string Number(std::mt19937_64& rng, int digits) {
  std::string s;
  s.push_back(static_cast<char>('1' + rng() % 9));  // no leading zero
  for (int i = 1; i < digits; ++i) s.push_back(static_cast<char>('0' + rng() % 10));
  return s;
}

// `n` distinct words.
std::vector<std::string> Pick(const std::vector<std::string>& words, std::mt19937_64& rng, int n) {
  n = std::min<int>(n, static_cast<int>(words.size()));
  std::set<size_t> chosen;
  while (static_cast<int>(chosen.size()) < n) chosen.insert(rng() % words.size());
  std::vector<std::string> out;
  out.reserve(chosen.size());
  for (size_t i : chosen) out.push_back(words[i]);
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

std::string Capitalize(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> LoadWords(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open the word list (Debian package wamerican)"));
  }
  std::set<std::string> words;
  std::string w;
  while (std::getline(in, w)) {
    if (w.size() < 3 || w.size() > 8) continue;
    if (!std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; })) continue;
    words.insert(w);
  }
  if (words.size() < 1000) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": only ", words.size(), " usable words"));
  }
  return std::vector<std::string>(words.begin(), words.end());
}

TaskGenerator::TaskGenerator(std::vector<std::string> words, TokenCounter counter)
    : words_(std::move(words)), counter_(std::move(counter)) {
  if (counter_) {
    for (const std::string& w : words_) {
      if (w.size() >= 3 && counter_(" " + w) == 1) values_.push_back(w);
    }
    if (values_.size() < 50) values_.clear();  // too few: fall back to numbers
  }
}

void TaskGenerator::set_single_token_names(bool on) {
  if (!on || values_.size() < kMinSingleTokenWords || single_token_names_) return;
  std::vector<std::string> values, names;
  for (size_t i = 0; i < values_.size(); ++i) (i % 3 == 0 ? values : names).push_back(values_[i]);
  values_ = std::move(values);
  names_ = std::move(names);
  single_token_names_ = true;
}

std::string TaskGenerator::Value(std::mt19937_64& rng, int digits) const {
  if (!values_.empty()) return values_[rng() % values_.size()];
  return Number(rng, digits);
}

bool IsGeneratedKind(absl::string_view kind) {
  return kind == "single" || kind == "multi" || kind == "multi_lives" || kind == "needle";
}

Example TaskGenerator::One(const std::string& kind, uint64_t seed, int num_records,
                           int target_tokens, int value_digits) const {
  std::mt19937_64 rng(seed);
  Example ex;
  ex.kind = kind;
  if (kind == "single") {
    SingleHop(rng, num_records, value_digits, ex);
  } else if (kind == "multi" || kind == "multi_lives") {
    MultiHop(rng, num_records, value_digits, kind == "multi", ex);
  } else {
    Needle(rng, target_tokens, value_digits, ex);
  }
  return ex;
}

const std::vector<std::string>& TaskGenerator::NamePool() const {
  return single_token_names_ ? names_ : words_;
}

void TaskGenerator::SingleHop(std::mt19937_64& rng, int num_records, int value_digits,
                              Example& ex) const {
  const std::vector<std::string> names = Pick(NamePool(), rng, num_records);
  std::vector<std::string> sentences;
  std::vector<std::string> values;
  for (const std::string& n : names) {
    values.push_back(Value(rng, value_digits));
    sentences.push_back(absl::StrCat("The code of ", n, " is ", values.back(), "."));
    ex.records.emplace_back(n, values.back());
  }
  const size_t q = rng() % names.size();
  ex.context = absl::StrJoin(sentences, " ");
  ex.question = absl::StrCat("What is the code of ", names[q], "?");
  ex.answers = {values[q]};
  for (size_t i = 0; i < names.size(); ++i) {
    ex.all_qas.emplace_back(absl::StrCat("What is the code of ", names[i], "?"), values[i]);
  }
}

// Half the records map people to towns, half map towns to codes; every town has a code,
// so the first hop alone never answers. `bridge`: "The town of <name> is <town>.", asked
// "What is the code of the town of <name>?" and answered "<town>: <value>", the town
// first (each hop is then one lookup of a name, as in single-hop records); otherwise the
// format the committed models were trained with: "<Name> lives in <town>.", asked "What
// is the code of the town where <Name> lives?" and answered "<value>".
void TaskGenerator::MultiHop(std::mt19937_64& rng, int num_records, int value_digits, bool bridge,
                             Example& ex) const {
  const int pairs = std::max(1, num_records / 2);
  const std::vector<std::string> picked = Pick(NamePool(), rng, 2 * pairs);
  auto person = [&](int i) { return bridge ? picked[i] : Capitalize(picked[i]); };
  std::vector<std::string> sentences;
  std::vector<std::string> values;
  for (int i = 0; i < pairs; ++i) {
    const std::string& town = picked[pairs + i];
    values.push_back(Value(rng, value_digits));
    sentences.push_back(bridge ? absl::StrCat("The town of ", person(i), " is ", town, ".")
                               : absl::StrCat(person(i), " lives in ", town, "."));
    sentences.push_back(absl::StrCat("The code of ", town, " is ", values.back(), "."));
    ex.records.emplace_back(town, values.back());
  }
  std::shuffle(sentences.begin(), sentences.end(), rng);
  ex.context = absl::StrJoin(sentences, " ");
  for (int i = 0; i < pairs; ++i) {
    const std::string& town = picked[pairs + i];
    if (bridge) {
      ex.all_qas.emplace_back(absl::StrCat("What is the code of the town of ", person(i), "?"),
                              absl::StrCat(town, ": ", values[i]));
      ex.all_qas.emplace_back(absl::StrCat("What is the town of ", person(i), "?"), town);
    } else {
      ex.all_qas.emplace_back(
          absl::StrCat("What is the code of the town where ", person(i), " lives?"), values[i]);
      ex.all_qas.emplace_back(absl::StrCat("Where does ", person(i), " live?"), town);
    }
  }
  const int q = static_cast<int>(rng() % pairs);
  ex.question = ex.all_qas[2 * q].first;
  ex.answers = {ex.all_qas[2 * q].second};
}

void TaskGenerator::Needle(std::mt19937_64& rng, int target_tokens, int value_digits,
                           Example& ex) const {
  const std::vector<std::string> name = Pick(NamePool(), rng, 1);
  const std::string value = Value(rng, value_digits);
  const std::string needle = absl::StrCat("The code of ", name[0], " is ", value, ".");
  auto count = [&](const std::string& s) {
    return counter_ ? counter_(s) : static_cast<int>(s.size() / 4);
  };
  // Distractor sentences of dictionary words, until the context reaches the target.
  std::vector<std::string> sentences;
  std::string text;
  while (count(text) + count(needle) < target_tokens) {
    std::vector<std::string> ws;
    const int len = 5 + static_cast<int>(rng() % 8);
    ws.reserve(len);
    for (int i = 0; i < len; ++i) ws.push_back(words_[rng() % words_.size()]);
    ws[0] = Capitalize(ws[0]);
    sentences.push_back(absl::StrCat(absl::StrJoin(ws, " "), "."));
    text = absl::StrJoin(sentences, " ");
  }
  if (!sentences.empty()) sentences.pop_back();
  const size_t at = sentences.empty() ? 0 : rng() % (sentences.size() + 1);
  sentences.insert(sentences.begin() + static_cast<std::ptrdiff_t>(at), needle);
  ex.context = absl::StrJoin(sentences, " ");
  ex.question = absl::StrCat("What is the code of ", name[0], "?");
  ex.answers = {value};
  ex.target_tokens = target_tokens;
  ex.all_qas.emplace_back(ex.question, value);
  ex.records.emplace_back(name[0], value);
}

std::vector<Example> TaskGenerator::Generate(const TaskOptions& o) const {
  std::vector<Example> out;
  for (int i = 0; i < o.num_examples; ++i) {
    const uint64_t seed = o.seed * 1000003ull + static_cast<uint64_t>(i);
    // The lengths come from their own stream, so a fixed-length cell is unchanged.
    std::mt19937_64 lengths(seed ^ 0x5DEECE66Dull);
    auto draw = [&](int lo, int hi) {
      return hi > lo ? lo + static_cast<int>(lengths() % static_cast<uint64_t>(hi - lo + 1)) : lo;
    };
    const int records = draw(o.num_records, o.num_records_max);
    const int tokens = draw(o.target_tokens, o.target_tokens_max);
    Example ex = One(o.kind, seed, records, tokens, o.value_digits);
    if (o.kind != "needle") ex.num_records = records;
    ex.id = absl::StrCat(o.kind, "-", o.seed, "-", i);
    out.push_back(std::move(ex));
  }
  return out;
}

absl::Status ParseRange(absl::string_view text, absl::string_view what, int* lo, int* hi) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, '-');
  int a = 0, b = 0;
  const bool ok =
      (parts.size() == 1 && absl::SimpleAtoi(parts[0], &a) && (b = a, true)) ||
      (parts.size() == 2 && absl::SimpleAtoi(parts[0], &a) && absl::SimpleAtoi(parts[1], &b));
  if (!ok || a < 1 || b < a) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": expected a count N or a range A-B with 1 <= A <= B, found '", text, "'"));
  }
  *lo = a;
  *hi = b;
  return absl::OkStatus();
}

std::string ToSquadJson(const std::vector<Example>& examples) {
  json data = json::array();
  for (const Example& ex : examples) {
    json answers = json::array();
    for (const std::string& a : ex.answers) {
      const size_t at = ex.context.find(a);
      answers.push_back(
          {{"text", a}, {"answer_start", at == std::string::npos ? -1 : static_cast<int64_t>(at)}});
    }
    json qa = {
        {"id", ex.id}, {"question", ex.question}, {"answers", answers}, {"is_impossible", false}};
    json paragraph = {{"context", ex.context}, {"qas", json::array({qa})}};
    json article = {
        {"title",
         absl::StrCat(ex.kind, ex.target_tokens > 0 ? absl::StrCat("-", ex.target_tokens) : "")},
        {"paragraphs", json::array({paragraph})}};
    data.push_back(article);
  }
  return json({{"version", "v2.0"}, {"data", data}}).dump(1) + "\n";
}

namespace {

// Reads SQuAD v1/v2 JSON. Fields of another type than SQuAD's are errors naming the
// place (json's value() would throw); absent optional ones take SQuAD's defaults.
class SquadReader {
 public:
  explicit SquadReader(const std::string& source) : source_(source) {}

  absl::StatusOr<std::vector<Example>> Read(const std::string& text) {
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("data") || !j["data"].is_array()) {
      return Fail("expected SQuAD JSON {\"data\": [...]}");
    }
    for (size_t a = 0; a < j["data"].size(); ++a) {
      const json& article = j["data"][a];
      const std::string where = absl::StrCat("data[", a, "]");
      if (!article.is_object()) return Fail(where, ": expected an object, found ", Quote(article));
      ASSIGN_OR_RETURN(const std::string title, String(article, "title", where));
      if (!article.contains("paragraphs") || !article["paragraphs"].is_array()) {
        return Fail(where, " ('", title, "') has no paragraphs array");
      }
      for (size_t i = 0; i < article["paragraphs"].size(); ++i) {
        RETURN_IF_ERROR(Paragraph(article["paragraphs"][i], title,
                                  absl::StrCat(where, ".paragraphs[", i, "]")));
      }
    }
    return std::move(out_);
  }

 private:
  template <typename... Parts>
  absl::Status Fail(const Parts&... parts) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", parts...));
  }
  static std::string Quote(const json& v) {
    std::string s = v.dump();
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
  }
  // An optional string field: absent or null is "".
  absl::StatusOr<std::string> String(const json& obj, const char* key,
                                     const std::string& where) const {
    if (!obj.contains(key) || obj[key].is_null()) return std::string();
    if (!obj[key].is_string()) {
      return Fail(where, ".", key, ": expected a string, found ", Quote(obj[key]));
    }
    return obj[key].get<std::string>();
  }

  absl::Status Paragraph(const json& p, const std::string& title, const std::string& where) {
    if (!p.is_object() || !p.contains("context") || !p["context"].is_string() ||
        !p.contains("qas") || !p["qas"].is_array()) {
      return Fail(where, " (of '", title, "'): expected a context string and a qas array");
    }
    for (size_t q = 0; q < p["qas"].size(); ++q) {
      RETURN_IF_ERROR(Question(p["qas"][q], p["context"].get<std::string>(), title,
                               absl::StrCat(where, ".qas[", q, "]")));
    }
    return absl::OkStatus();
  }

  absl::Status Question(const json& qa, const std::string& context, const std::string& title,
                        const std::string& where) {
    if (!qa.is_object()) return Fail(where, ": expected an object, found ", Quote(qa));
    if (qa.contains("is_impossible") && !qa["is_impossible"].is_boolean()) {
      return Fail(where, ".is_impossible: expected true or false, found ",
                  Quote(qa["is_impossible"]));
    }
    if (qa.contains("is_impossible") && qa["is_impossible"].get<bool>()) return absl::OkStatus();
    Example ex;
    ex.context = context;
    ASSIGN_OR_RETURN(ex.id, String(qa, "id", where));
    ASSIGN_OR_RETURN(ex.question, String(qa, "question", where));
    // The generator's titles ("single-40", "needle-512") carry the kind and length.
    const std::string dash = title.substr(0, title.find('-'));
    ex.kind = IsGeneratedKind(dash) ? dash : "squad";
    if (title.find('-') != std::string::npos) {
      ex.target_tokens = std::atoi(title.c_str() + title.find('-') + 1);
    }
    if (qa.contains("answers") && qa["answers"].is_array()) {
      for (const json& a : qa["answers"]) {
        if (a.is_object() && a.contains("text") && a["text"].is_string()) {
          ex.answers.push_back(a["text"].get<std::string>());
        }
      }
    }
    if (ex.question.empty() || ex.answers.empty()) {
      return Fail(where, " ('", ex.id, "'): expected a question and at least one answer text");
    }
    out_.push_back(std::move(ex));
    return absl::OkStatus();
  }

  const std::string& source_;
  std::vector<Example> out_;
};

}  // namespace

absl::StatusOr<std::vector<Example>> FromSquadJson(const std::string& text,
                                                   const std::string& source) {
  return SquadReader(source).Read(text);
}

absl::StatusOr<std::vector<Example>> LoadSquadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return FromSquadJson(ss.str(), path);
}

std::string NormalizeAnswer(const std::string& s) {
  std::string lower;
  for (char c : s) {
    if (std::ispunct(static_cast<unsigned char>(c))) continue;
    lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  std::vector<std::string> words;
  for (absl::string_view w : absl::StrSplit(lower, absl::ByAnyChar(" \t\n\r"), absl::SkipEmpty())) {
    if (w == "a" || w == "an" || w == "the") continue;
    words.emplace_back(w);
  }
  return absl::StrJoin(words, " ");
}

double ExactMatch(const std::string& prediction, const std::vector<std::string>& golds) {
  const std::string p = NormalizeAnswer(prediction);
  for (const std::string& g : golds) {
    if (NormalizeAnswer(g) == p) return 1.0;
  }
  return 0.0;
}

double TokenF1(const std::string& prediction, const std::vector<std::string>& golds) {
  const std::vector<std::string> p =
      absl::StrSplit(NormalizeAnswer(prediction), ' ', absl::SkipEmpty());
  double best = 0.0;
  for (const std::string& gold : golds) {
    const std::vector<std::string> g =
        absl::StrSplit(NormalizeAnswer(gold), ' ', absl::SkipEmpty());
    if (p.empty() || g.empty()) {
      best = std::max(best, p.empty() && g.empty() ? 1.0 : 0.0);
      continue;
    }
    std::map<std::string, int> counts;
    for (const auto& w : g) ++counts[w];
    int common = 0;
    for (const auto& w : p) {
      if (counts[w]-- > 0) ++common;
    }
    if (common == 0) continue;
    const double precision = static_cast<double>(common) / p.size();
    const double recall = static_cast<double>(common) / g.size();
    best = std::max(best, 2 * precision * recall / (precision + recall));
  }
  return best;
}

}  // namespace kvstream::eval
