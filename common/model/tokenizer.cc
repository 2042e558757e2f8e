#include "common/model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/base/status.h"

namespace kvstream::model {
namespace {

using nlohmann::json;

bool ValidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  const auto n = static_cast<utf8proc_ssize_t>(s.size());
  for (utf8proc_ssize_t i = 0; i < n;) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t len = utf8proc_iterate(p + i, n - i, &cp);
    if (len <= 0) return false;
    i += len;
  }
  return true;
}

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

const std::vector<uint32_t>& ByteToUnicode() {
  static const std::vector<uint32_t> table = [] {
    std::vector<uint32_t> t(256);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      t[b] = printable ? b : 256 + extra++;
    }
    return t;
  }();
  return table;
}

std::string CodepointToUtf8(uint32_t cp) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  return std::string(reinterpret_cast<char*>(buf), static_cast<size_t>(n));
}

struct Tokenizer::Impl {
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::string> id_to_token;                              // vocabulary and added tokens
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // pair -> (rank, merged id)
  struct Added {
    std::string content;
    int32_t id;
    bool special;
  };
  std::vector<Added> added;  // longest first
  std::vector<bool> is_added, is_special;
  bool nfc = false;
  bool ignore_merges = false;
  pcre2_code* regex = nullptr;
  int32_t byte_id[256] = {};
  std::unordered_map<uint32_t, uint8_t> unicode_to_byte;
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  ~Impl() {
    if (regex != nullptr) pcre2_code_free(regex);
  }

  // BPE over one pre-tokenized piece (raw UTF-8 bytes).
  std::vector<int32_t> Bpe(const std::string& piece) const {
    {
      std::lock_guard<std::mutex> lock(cache_mu);
      auto it = cache.find(piece);
      if (it != cache.end()) return it->second;
    }
    std::vector<int32_t> syms;
    syms.reserve(piece.size());
    for (unsigned char b : piece) syms.push_back(byte_id[b]);
    bool whole = false;
    if (ignore_merges) {
      std::string mapped;
      for (unsigned char b : piece) mapped += CodepointToUtf8(ByteToUnicode()[b]);
      auto it = vocab.find(mapped);
      if (it != vocab.end()) {
        syms = {it->second};
        whole = true;
      }
    }
    while (!whole && syms.size() > 1) {
      int32_t best_rank = INT32_MAX, best_id = -1;
      size_t best_at = 0;
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        auto it = merges.find(PairKey(syms[i], syms[i + 1]));
        if (it != merges.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          best_id = it->second.second;
          best_at = i;
        }
      }
      if (best_id < 0) break;
      // Merge every occurrence of the best pair, left to right.
      const int32_t a = syms[best_at], b = syms[best_at + 1];
      std::vector<int32_t> next;
      next.reserve(syms.size());
      for (size_t i = 0; i < syms.size(); ++i) {
        if (i + 1 < syms.size() && syms[i] == a && syms[i + 1] == b) {
          next.push_back(best_id);
          ++i;
        } else {
          next.push_back(syms[i]);
        }
      }
      syms.swap(next);
    }
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() < 100000) cache.emplace(piece, syms);
    return syms;
  }

  absl::Status EncodeSegment(absl::string_view text, std::vector<int32_t>* out) const {
    return Split(text, [&](const std::string& piece) {
      const std::vector<int32_t> ids = Bpe(piece);
      out->insert(out->end(), ids.begin(), ids.end());
    });
  }

  // Normalizes `text` and calls `emit` with each pre-tokenized piece in order.
  template <typename Emit>
  absl::Status Split(absl::string_view text, Emit&& emit_piece) const {
    std::string normalized(text);
    if (nfc && !text.empty()) {
      // By length, not NUL-terminated (utf8proc_NFC): text after a NUL is text too.
      utf8proc_uint8_t* n = nullptr;
      const utf8proc_ssize_t len =
          utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(normalized.data()),
                       static_cast<utf8proc_ssize_t>(normalized.size()), &n,
                       static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
      if (len < 0) return absl::InvalidArgumentError("text is not valid UTF-8");
      normalized.assign(reinterpret_cast<char*>(n), static_cast<size_t>(len));
      free(n);
    }
    auto emit = [&](size_t begin, size_t end) {
      if (begin < end) emit_piece(normalized.substr(begin, end - begin));
    };
    if (regex == nullptr) {
      emit(0, normalized.size());
      return absl::OkStatus();
    }
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex, nullptr);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(normalized.data());
    const PCRE2_SIZE len = normalized.size();
    PCRE2_SIZE offset = 0, last_end = 0;
    absl::Status status;
    while (offset < len) {
      const int rc = pcre2_match(regex, subject, len, offset, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        status = absl::InternalError(absl::StrCat("pre-tokenizer regex failed with code ", rc));
        break;
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      emit(last_end, ov[0]);  // "Isolated": the text between matches is a piece too
      emit(ov[0], ov[1]);
      last_end = ov[1];
      if (ov[1] == ov[0]) {  // empty match: step one code point
        offset = ov[1] + 1;
        while (offset < len && (normalized[offset] & 0xC0) == 0x80) ++offset;
      } else {
        offset = ov[1];
      }
    }
    pcre2_match_data_free(md);
    RETURN_IF_ERROR(status);
    emit(last_end, len);
    return absl::OkStatus();
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return FromJson(ss.str(), path);
}

// Reads tokenizer.json's parts into an Impl; every error names `source` and the field.
class Tokenizer::Loader {
 public:
  Loader(absl::string_view source, Impl& impl) : source_(source), impl_(impl) {}

  absl::Status Read(const json& j) {
    if (!j.contains("model") || !j["model"].is_object()) {
      return Fail("expected a BPE model (\"model\": {\"type\": \"BPE\", ...})");
    }
    const json& m = j["model"];
    ASSIGN_OR_RETURN(const std::string model_type, OptString(m, "type", "", "model"));
    if (model_type != "BPE") {
      return Fail("expected a BPE model (\"model\": {\"type\": \"BPE\", ...}), found type \"",
                  model_type, "\"");
    }
    RETURN_IF_ERROR(Vocab(m));
    ASSIGN_OR_RETURN(impl_.ignore_merges, OptBool(m, "ignore_merges", false, "model"));
    RETURN_IF_ERROR(Merges(m));
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& t : j["added_tokens"]) RETURN_IF_ERROR(AddedToken(t));
    }
    IndexAdded();
    if (j.contains("normalizer") && j["normalizer"].is_object()) {  // NFC, or none
      ASSIGN_OR_RETURN(const std::string type,
                       OptString(j["normalizer"], "type", "", "normalizer"));
      if (type != "NFC") return Fail("normalizer ", type, " is not supported (NFC or null)");
      impl_.nfc = true;
    }
    if (j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object()) {
      RETURN_IF_ERROR(PreTokenizer(j["pre_tokenizer"]));
    }
    return CompileRegex();
  }

 private:
  template <typename... Parts>
  absl::Status Fail(const Parts&... parts) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", parts...));
  }

  // Optional fields of one type: absent or null gives `fallback`, another type an error
  // (json's value() would throw).
  absl::StatusOr<std::string> OptString(const json& obj, const char* key, const char* fallback,
                                        absl::string_view where) const {
    if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return fallback;
    if (!obj[key].is_string()) {
      return Fail(where, ".", key, ": expected a string, found ", obj[key].dump());
    }
    return obj[key].get<std::string>();
  }
  absl::StatusOr<bool> OptBool(const json& obj, const char* key, bool fallback,
                               absl::string_view where) const {
    if (!obj.is_object() || !obj.contains(key) || obj[key].is_null()) return fallback;
    if (!obj[key].is_boolean()) {
      return Fail(where, ".", key, ": expected true or false, found ", obj[key].dump());
    }
    return obj[key].get<bool>();
  }
  // Ids index id_to_token: bounded, so a hostile file cannot ask for a huge table.
  static bool ValidId(const json& v) {
    return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= 10'000'000;
  }

  // Gives `id` the string `token`. Decoding maps an id back to its one string: two strings
  // on one id would decode one as the other, so ids are unique within the vocabulary.
  void Claim(int32_t id, const std::string& token) {
    if (static_cast<size_t>(id) >= impl_.id_to_token.size()) {
      impl_.id_to_token.resize(id + 1);
      taken_.resize(id + 1);
    }
    taken_[id] = true;
    impl_.id_to_token[id] = token;
    impl_.vocab[token] = id;
  }
  bool Taken(int32_t id) const { return static_cast<size_t>(id) < taken_.size() && taken_[id]; }

  absl::Status Vocab(const json& m) {
    if (!m.contains("vocab") || !m["vocab"].is_object()) {
      return Fail("model.vocab must be an object");
    }
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
      if (!ValidId(it.value())) {
        return Fail("vocab entry ", it.key(), " has a bad id ", it.value().dump());
      }
      const auto id = it.value().get<int32_t>();
      if (Taken(id)) {
        return Fail("vocab entries \"", impl_.id_to_token[id], "\" and \"", it.key(),
                    "\" share id ", id);
      }
      Claim(id, it.key());
    }
    // Every byte's character must be a token, or BPE cannot start.
    for (int b = 0; b < 256; ++b) {
      const std::string ch = CodepointToUtf8(ByteToUnicode()[b]);
      auto it = impl_.vocab.find(ch);
      if (it == impl_.vocab.end()) return Fail("vocab lacks the byte-level token for byte ", b);
      impl_.byte_id[b] = it->second;
      impl_.unicode_to_byte[ByteToUnicode()[b]] = static_cast<uint8_t>(b);
    }
    return absl::OkStatus();
  }

  absl::Status Merges(const json& m) {
    if (!m.contains("merges") || !m["merges"].is_array()) {
      return Fail("model.merges must be an array");
    }
    int32_t rank = 0;
    for (const json& mg : m["merges"]) {
      std::string a, b;
      if (mg.is_string()) {  // "a b"
        const std::string s = mg.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos)
          return Fail("merge ", rank, " '", s, "' is not \"left right\"");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
        a = mg[0].get<std::string>();
        b = mg[1].get<std::string>();
      } else {
        return Fail("merge ", rank, " must be \"a b\" or [\"a\", \"b\"], found ", mg.dump());
      }
      auto ia = impl_.vocab.find(a), ib = impl_.vocab.find(b), im = impl_.vocab.find(a + b);
      if (ia == impl_.vocab.end() || ib == impl_.vocab.end() || im == impl_.vocab.end()) {
        return Fail("merge ", rank, " (", a, ", ", b, ") names a token missing from the vocab");
      }
      impl_.merges.emplace(PairKey(ia->second, ib->second), std::make_pair(rank, im->second));
      ++rank;
    }
    return absl::OkStatus();
  }

  absl::Status AddedToken(const json& t) {
    if (!t.contains("id") || !ValidId(t["id"]) || !t.contains("content") ||
        !t["content"].is_string() || t["content"].get<std::string>().empty()) {
      return Fail("added token ", t.dump(), " needs an id in 0..10000000 and non-empty content");
    }
    Impl::Added a{t["content"].get<std::string>(), t["id"].get<int32_t>(), false};
    ASSIGN_OR_RETURN(a.special, OptBool(t, "special", false, "added token"));
    // An added token may repeat a vocabulary entry (GPT-2's <|endoftext|>), not take
    // another string's id.
    if (Taken(a.id) && impl_.id_to_token[a.id] != a.content) {
      return Fail("added token \"", a.content, "\" has id ", a.id, ", which \"",
                  impl_.id_to_token[a.id], "\" already has");
    }
    Claim(a.id, a.content);
    impl_.added.push_back(std::move(a));
    return absl::OkStatus();
  }

  // Added tokens are matched longest first; flags per id for Encode and Decode.
  void IndexAdded() {
    std::stable_sort(impl_.added.begin(), impl_.added.end(),
                     [](const Impl::Added& x, const Impl::Added& y) {
                       return x.content.size() > y.content.size();
                     });
    impl_.is_added.assign(impl_.id_to_token.size(), false);
    impl_.is_special.assign(impl_.id_to_token.size(), false);
    for (const auto& a : impl_.added) {
      impl_.is_added[a.id] = true;
      impl_.is_special[a.id] = a.special;
    }
  }

  // A Split regex, optionally in a Sequence with ByteLevel(use_regex=false).
  absl::Status PreTokenizer(const json& p) {
    ASSIGN_OR_RETURN(const std::string p_type, OptString(p, "type", "", "pre_tokenizer"));
    std::vector<json> steps;
    if (p_type == "Sequence") {
      if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array()) {
        return Fail("pre_tokenizer.pretokenizers: expected an array of pre-tokenizers");
      }
      for (const json& s : p["pretokenizers"]) steps.push_back(s);
    } else {
      steps.push_back(p);
    }
    for (const json& s : steps) RETURN_IF_ERROR(PreTokenizerStep(s));
    return absl::OkStatus();
  }

  absl::Status PreTokenizerStep(const json& s) {
    ASSIGN_OR_RETURN(const std::string type, OptString(s, "type", "", "pre-tokenizer"));
    if (type == "Split" && s.contains("pattern") && s["pattern"].is_object() &&
        s["pattern"].contains("Regex")) {
      if (!s["pattern"]["Regex"].is_string()) {
        return Fail("Split pre-tokenizer: pattern.Regex must be a string, found ",
                    s["pattern"]["Regex"].dump());
      }
      pattern_ = s["pattern"]["Regex"].get<std::string>();
      ASSIGN_OR_RETURN(const std::string behavior,
                       OptString(s, "behavior", "Isolated", "Split pre-tokenizer"));
      ASSIGN_OR_RETURN(const bool invert, OptBool(s, "invert", false, "Split pre-tokenizer"));
      if (behavior != "Isolated" || invert) {
        return Fail("Split pre-tokenizer must be behavior Isolated, invert false");
      }
      return absl::OkStatus();
    }
    if (type == "ByteLevel") {
      ASSIGN_OR_RETURN(const bool use_regex,
                       OptBool(s, "use_regex", true, "ByteLevel pre-tokenizer"));
      if (use_regex) return Fail("ByteLevel pre-tokenizer with use_regex=true is not supported");
      return absl::OkStatus();
    }
    return Fail("pre-tokenizer ", type, " is not supported");
  }

  absl::Status CompileRegex() {
    if (pattern_.empty()) return absl::OkStatus();
    int err = 0;
    PCRE2_SIZE err_off = 0;
    impl_.regex = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern_.data()), pattern_.size(),
                                PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
    if (impl_.regex == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return Fail("pre-tokenizer regex does not compile at offset ", err_off, ": ",
                  reinterpret_cast<char*>(msg));
    }
    pcre2_jit_compile(impl_.regex, PCRE2_JIT_COMPLETE);  // falls back to the interpreter
    return absl::OkStatus();
  }

  const absl::string_view source_;
  Impl& impl_;
  std::vector<bool> taken_;  // ids that have a string
  std::string pattern_;      // the Split pre-tokenizer's regex
};

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view text,
                                                               absl::string_view source) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  }
  auto impl = std::make_unique<Impl>();
  RETURN_IF_ERROR(Loader(source, *impl).Read(j));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       bool parse_special) const {
  if (!ValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<int32_t> out;
  size_t seg_begin = 0, i = 0;
  while (i < text.size()) {
    const Impl::Added* hit = nullptr;
    if (parse_special) {
      for (const auto& a : impl_->added) {  // longest first
        if (text.compare(i, a.content.size(), a.content) == 0) {
          hit = &a;
          break;
        }
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    RETURN_IF_ERROR(impl_->EncodeSegment(text.substr(seg_begin, i - seg_begin), &out));
    out.push_back(hit->id);
    i += hit->content.size();
    seg_begin = i;
  }
  RETURN_IF_ERROR(impl_->EncodeSegment(text.substr(seg_begin), &out));
  return out;
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= impl_->id_to_token.size() ||
        impl_->id_to_token[id].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary (",
                                                     impl_->id_to_token.size(), " ids)"));
    }
    if (impl_->is_added[id]) {
      if (!(skip_special && impl_->is_special[id])) out += impl_->id_to_token[id];
      continue;
    }
    const std::string& tok = impl_->id_to_token[id];
    utf8proc_ssize_t p = 0;
    const auto n = static_cast<utf8proc_ssize_t>(tok.size());
    while (p < n) {
      utf8proc_int32_t cp;
      const utf8proc_ssize_t len =
          utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(tok.data()) + p, n - p, &cp);
      if (len <= 0) break;
      auto it = impl_->unicode_to_byte.find(static_cast<uint32_t>(cp));
      if (it != impl_->unicode_to_byte.end()) {
        out.push_back(static_cast<char>(it->second));
      } else {
        out.append(tok, static_cast<size_t>(p), static_cast<size_t>(len));
      }
      p += len;
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> Tokenizer::PreTokenize(absl::string_view text) const {
  if (!ValidUtf8(text)) return absl::InvalidArgumentError("text is not valid UTF-8");
  std::vector<std::string> pieces;
  RETURN_IF_ERROR(impl_->Split(text, [&](const std::string& p) { pieces.push_back(p); }));
  return pieces;
}

int Tokenizer::TokenId(absl::string_view token) const {
  auto it = impl_->vocab.find(std::string(token));
  return it == impl_->vocab.end() ? -1 : it->second;
}

int Tokenizer::vocab_size() const { return static_cast<int>(impl_->id_to_token.size()); }

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->is_special.size() && impl_->is_special[id];
}

std::function<int(const std::string&)> CountTokens(const Tokenizer& tokenizer,
                                                   absl::Status& error) {
  return [&tokenizer, &error](const std::string& text) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text, false);
    if (!ids.ok()) {
      if (error.ok()) error = ids.status();
      return 0;
    }
    return static_cast<int>(ids->size());
  };
}

}  // namespace kvstream::model
