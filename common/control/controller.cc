#include "common/control/controller.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status.h"
#include "common/codec/quantize.h"

namespace kvstream::control {

void LinkEstimator::AddThroughputSample(uint64_t bytes, double seconds) {
  if (seconds <= 0 || bytes == 0) return;
  samples_.push_back(8.0 * static_cast<double>(bytes) / seconds);
  while (static_cast<int>(samples_.size()) > window_) samples_.pop_front();
}

void LinkEstimator::AddRttSample(double seconds) {
  if (seconds < 0) return;
  rtts_.push_back(seconds);
  while (static_cast<int>(rtts_.size()) > window_) rtts_.pop_front();
}

double LinkEstimator::bandwidth_bps() const {
  if (samples_.empty()) return 0;
  double inv = 0;
  for (double s : samples_) inv += 1.0 / s;
  return static_cast<double>(samples_.size()) / inv;
}

double LinkEstimator::rtt_seconds() const {
  if (rtts_.empty()) return 0;
  return *std::min_element(rtts_.begin(), rtts_.end());
}

void AddAckGapSamples(LinkEstimator& estimator, const std::vector<uint64_t>& bytes,
                      const std::vector<double>& sent, const std::vector<double>& acked) {
  for (size_t i = 1; i < bytes.size() && i < sent.size() && i < acked.size(); ++i) {
    if (acked[i] < 0 || acked[i - 1] < 0) continue;
    estimator.AddThroughputSample(bytes[i], acked[i] - std::max(sent[i], acked[i - 1]));
  }
}

PrefillCost PrefillCost::FromRate(double tokens_per_second) {
  PrefillCost c;
  if (tokens_per_second > 0) c.a_ = 1.0 / tokens_per_second;
  return c;
}

absl::StatusOr<PrefillCost> PrefillCost::Fit(int n1, double t1, int n2, double t2) {
  if (n1 <= 0 || n2 <= n1 || !(t1 > 0) || !(t2 > 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("prefill timings: expected 0 < n1 < n2 and positive seconds, found n1=%d "
                        "(%g s), n2=%d (%g s)",
                        n1, t1, n2, t2));
  }
  PrefillCost c;
  // a*n + b*n^2 = t at both points: per-token time t/n = a + b*n is a line in n.
  c.b_ = (t2 / n2 - t1 / n1) / (n2 - n1);
  c.a_ = t1 / n1 - c.b_ * n1;
  if (c.b_ < 0) {  // per-token time fell with length: noise; least squares through both, linear
    c.b_ = 0;
    c.a_ = (t1 * n1 + t2 * n2) / (static_cast<double>(n1) * n1 + static_cast<double>(n2) * n2);
  } else if (c.a_ < 0) {  // steeper than quadratic: least squares, quadratic only
    const double q1 = static_cast<double>(n1) * n1, q2 = static_cast<double>(n2) * n2;
    c.a_ = 0;
    c.b_ = (t1 * q1 + t2 * q2) / (q1 * q1 + q2 * q2);
  }
  return c;
}

void PrefillCost::Observe(int n, double seconds, double alpha) {
  const double modelled = a_ * n + b_ * static_cast<double>(n) * n;
  if (!(modelled > 0) || !(seconds > 0)) return;
  const double ratio = std::clamp(seconds / modelled, 0.1, 10.0);
  scale_ = (1 - alpha) * scale_ + alpha * ratio;
}

std::string OperatingPoint::label() const {
  if (mode == kvstream::v1::MODE_TEXT) return "text";
  std::string sel = std::string(select::PolicyName(selector));
  if (selector != select::Policy::kFull) sel += absl::StrFormat("@%.2f", retention);
  if (mode == kvstream::v1::MODE_SCOUT) return absl::StrCat("scout ", sel);
  return absl::StrCat(mode == kvstream::v1::MODE_PROJECTED ? "projected " : "kv ", sel, " ", spec);
}

absl::StatusOr<Prediction> Predict(const OperatingPoint& p, const RequestShape& r,
                                   const ModelShape& m, const Rates& rates, const LinkState& link) {
  if (r.prompt_tokens <= 0 || r.context_tokens < 0 || r.context_tokens >= r.prompt_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("request shape: expected 0 <= context < prompt tokens, found ",
                     r.context_tokens, " of ", r.prompt_tokens));
  }
  if (link.bandwidth_bps <= 0) return absl::InvalidArgumentError("no bandwidth estimate");
  auto per = [](double n, double rate) { return rate > 0 ? n / rate : 0.0; };
  const int head = r.prompt_tokens - 1;
  const int kept_context = p.selector == select::Policy::kFull
                               ? r.context_tokens
                               : select::ContextBudget(p.retention, r.context_tokens);
  const int slots = head - r.context_tokens + kept_context;
  const PrefillCost& edge_prefill =
      p.selector != select::Policy::kFull && rates.edge_prefill_stats.known()
          ? rates.edge_prefill_stats
          : rates.edge_prefill;
  Prediction out;
  const uint64_t ids_bytes = 3ull * r.prompt_tokens + 64;
  if (p.mode == kvstream::v1::MODE_TEXT) {
    out.wire_bytes = ids_bytes;
    out.cloud_seconds = rates.cloud_prefill.Seconds(head) + per(1, rates.cloud_decode);
  } else if (p.mode == kvstream::v1::MODE_SCOUT) {
    out.wire_bytes = ids_bytes + 2ull * slots;
    out.edge_seconds = edge_prefill.Seconds(head);
    out.cloud_seconds = rates.cloud_prefill.Seconds(head) + per(1, rates.cloud_decode);
  } else {
    ASSIGN_OR_RETURN(codec::Plan plan, codec::ParsePlan(p.spec));
    RETURN_IF_ERROR(plan.Validate(m.layers));
    uint64_t payload = 0;
    const codec::TensorShape shape{m.kv_heads, slots, m.head_dim};
    for (int l = 0; l < m.layers; ++l) {
      const codec::LayerSpec ls = plan.ForLayer(l);
      payload += codec::EncodedTensorBytes(ls.k, shape, codec::DType::kF32) +
                 codec::EncodedTensorBytes(ls.v, shape, codec::DType::kF32);
    }
    out.wire_bytes = payload + 4ull * slots + 256;
    out.edge_seconds =
        edge_prefill.Seconds(head) + per(static_cast<double>(payload), rates.edge_encode_bytes);
    out.cloud_seconds = per(static_cast<double>(payload), rates.rebuild_bytes);
    out.cloud_seconds += p.mode == kvstream::v1::MODE_PROJECTED
                             ? per(slots, rates.projection) + per(1, rates.cloud_decode)
                             : per(1, rates.kv_decode);
    if (p.mode == kvstream::v1::MODE_PROJECTED && rates.answer_check) {
      out.wire_bytes += ids_bytes;  // Commit.check
      out.cloud_seconds += p.fallback_share * rates.cloud_prefill.Seconds(head);
    } else if (p.mode == kvstream::v1::MODE_KV && rates.kv_confidence_gate) {
      out.cloud_seconds +=
          p.fallback_share * (link.rtt_seconds + rates.cloud_prefill.Seconds(head));
    }
  }
  out.transfer_seconds =
      link.rtt_seconds + 8.0 * static_cast<double>(out.wire_bytes) / link.bandwidth_bps;
  out.ttft_seconds = out.edge_seconds + out.transfer_seconds + out.cloud_seconds;
  if (rates.layerwise && pipeline::SendsCache(p.mode) && p.selector == select::Policy::kFull) {
    // The first layer goes once it is computed; the last is computed before it goes.
    const double layers = std::max(1, m.layers);
    out.ttft_seconds = std::max(out.edge_seconds + out.transfer_seconds / layers,
                                out.edge_seconds / layers + out.transfer_seconds) +
                       out.cloud_seconds;
  }
  return out;
}

absl::StatusOr<Decision> Choose(const std::vector<OperatingPoint>& points,
                                const RequestShape& request, const ModelShape& scout,
                                const Rates& rates, const LinkState& link, double ttft_target,
                                double quality_floor) {
  if (points.empty()) return absl::FailedPreconditionError("no operating points to choose from");
  std::vector<Decision> all;
  for (const OperatingPoint& p : points) {
    ASSIGN_OR_RETURN(Prediction pred, Predict(p, request, scout, rates, link));
    all.push_back({p, pred, ""});
  }
  const Decision* best = nullptr;
  if (ttft_target > 0) {
    for (const Decision& d : all) {
      if (d.prediction.ttft_seconds > ttft_target) continue;
      if (best == nullptr || d.point.quality > best->point.quality ||
          (d.point.quality == best->point.quality &&
           d.prediction.ttft_seconds < best->prediction.ttft_seconds)) {
        best = &d;
      }
    }
    if (best != nullptr) {
      Decision out = *best;
      out.reason =
          absl::StrFormat("best quality %.3f within the %.3f s TTFT target (predicted %.3f s)",
                          out.point.quality, ttft_target, out.prediction.ttft_seconds);
      return out;
    }
  }
  for (const Decision& d : all) {
    if (d.point.quality < quality_floor) continue;
    if (best == nullptr || d.prediction.ttft_seconds < best->prediction.ttft_seconds) best = &d;
  }
  std::string why = absl::StrFormat("lowest TTFT at quality >= %.3f", quality_floor);
  if (best == nullptr) {
    for (const Decision& d : all) {
      if (best == nullptr || d.prediction.ttft_seconds < best->prediction.ttft_seconds) best = &d;
    }
    why = absl::StrFormat("no point reaches quality %.3f; lowest TTFT", quality_floor);
  }
  Decision out = *best;
  out.reason = absl::StrFormat("%s%s (predicted %.3f s)", why,
                               ttft_target > 0 ? ", none meets the target" : "",
                               out.prediction.ttft_seconds);
  return out;
}

absl::StatusOr<int> ReplanRung(const std::vector<std::string>& ladder, int current, int layers,
                               int slots, const ModelShape& shape, double bandwidth_bps,
                               double seconds_left) {
  if (ladder.empty() || current < 0 || current >= static_cast<int>(ladder.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("rung ", current, " is not on a ladder of ", ladder.size()));
  }
  if (bandwidth_bps <= 0) return absl::InvalidArgumentError("no bandwidth estimate");
  const codec::TensorShape t{shape.kv_heads, slots, shape.head_dim};
  for (int r = current; r < static_cast<int>(ladder.size()); ++r) {
    ASSIGN_OR_RETURN(codec::Plan plan, codec::ParsePlan(ladder[r]));
    const codec::LayerSpec ls = plan.base;
    const double bytes =
        static_cast<double>(layers) * (codec::EncodedTensorBytes(ls.k, t, codec::DType::kF32) +
                                       codec::EncodedTensorBytes(ls.v, t, codec::DType::kF32));
    if (8.0 * bytes / bandwidth_bps <= seconds_left) return r;
  }
  return static_cast<int>(ladder.size()) - 1;
}

namespace {
// Rows for the same point measured on several task kinds become one point at the lowest
// quality any kind gave: without a per-request estimate the controller cannot know which
// kind a request is, so it assumes the hardest.
void MergeConservatively(const OperatingPoint& p, std::vector<OperatingPoint>& points) {
  for (OperatingPoint& q : points) {
    if (q.mode == p.mode && q.selector == p.selector && q.retention == p.retention &&
        q.spec == p.spec) {
      q.quality = std::min(q.quality, p.quality);
      q.fallback_share = std::max(q.fallback_share, p.fallback_share);
      q.bands.insert(q.bands.end(), p.bands.begin(), p.bands.end());
      if (q.scout.empty()) q.scout = p.scout;
      return;
    }
  }
  points.push_back(p);
}

// A row's optional "tokens": [min, max], the prompt lengths it was measured over.
absl::Status ParseTokenRange(const nlohmann::json& e, const std::string& where, QualityBand& b) {
  b.min_tokens = 0;
  b.max_tokens = std::numeric_limits<int>::max();
  if (!e.contains("tokens")) return absl::OkStatus();
  const nlohmann::json& t = e["tokens"];
  const auto ok = [](const nlohmann::json& v) {
    return v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= (1 << 24);
  };
  if (!t.is_array() || t.size() != 2 || !ok(t[0]) || !ok(t[1]) ||
      t[0].get<int>() > t[1].get<int>()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": tokens must be [min, max], prompt lengths with 1 <= min <= max, found ",
        t.dump().substr(0, 80)));
  }
  b.min_tokens = t[0].get<int>();
  b.max_tokens = t[1].get<int>();
  return absl::OkStatus();
}

// A row's optional "answered_from_prompt", the share of answers its answer check sent
// to the prompt's prefill (`kvstream eval --answer_check --json` writes it).
absl::Status ParseFallback(const nlohmann::json& e, const std::string& where, QualityBand& b) {
  if (!e.contains("answered_from_prompt")) return absl::OkStatus();
  const nlohmann::json& f = e["answered_from_prompt"];
  if (!f.is_number() || !(f.get<double>() >= 0 && f.get<double>() <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": answered_from_prompt must be a share in [0, 1], found ", f.dump().substr(0, 40)));
  }
  b.fallback = f.get<double>();
  return absl::OkStatus();
}

// A kv row's optional "kv_min_confidence", the gate its answers went through.
absl::Status ParseGate(const nlohmann::json& e, const std::string& where, OperatingPoint& p) {
  if (!e.contains("kv_min_confidence")) return absl::OkStatus();
  const nlohmann::json& g = e["kv_min_confidence"];
  if (p.mode != kvstream::v1::MODE_KV) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": kv_min_confidence belongs to kv rows, found it on a ",
                     pipeline::ModeName(p.mode), " row"));
  }
  if (!g.is_number() || !(g.get<double>() >= 0 && g.get<double>() <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": kv_min_confidence must be a probability in [0, 1], found ",
                     g.dump().substr(0, 40)));
  }
  p.kv_min_confidence = g.get<double>();
  return absl::OkStatus();
}

// Every kv row states the same gate, or none does: one edge runs one gate, so a table
// measured under two would price some points for answers the edge does not give.
absl::Status CheckOneGate(const OperatingPoint& p, const std::string& where,
                          std::optional<double>& first) {
  if (p.mode != kvstream::v1::MODE_KV) return absl::OkStatus();
  if (!first) first = p.kv_min_confidence;
  if (*first == p.kv_min_confidence) return absl::OkStatus();
  const auto name = [](double g) { return g < 0 ? std::string("none") : absl::StrCat(g); };
  return absl::InvalidArgumentError(absl::StrCat(
      where, ": kv_min_confidence ", name(p.kv_min_confidence), ", where an earlier kv row states ",
      name(*first), " (a table's kv rows are measured under one gate)"));
}

// A row's optional "scout", the fingerprint of the scout it was measured with; every row
// that names one names the same (`first`: the first named).
absl::Status ParseScout(const nlohmann::json& e, const std::string& where, OperatingPoint& p,
                        std::string& first) {
  if (!e.contains("scout")) return absl::OkStatus();
  if (!e["scout"].is_string() || e["scout"].get<std::string>().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": scout must be a model fingerprint (a non-empty string), found ",
                     e["scout"].dump().substr(0, 40)));
  }
  p.scout = e["scout"].get<std::string>();
  if (first.empty()) first = p.scout;
  if (p.scout == first) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": scout ", p.scout.substr(0, 40), ", where an earlier row states ",
                   first.substr(0, 40), " (a table is measured with one scout)"));
}

// How far a prompt of `n` tokens lies outside `b`'s range (0 inside it).
int64_t Distance(const QualityBand& b, int n) {
  if (n < b.min_tokens) return static_cast<int64_t>(b.min_tokens) - n;
  if (n > b.max_tokens) return static_cast<int64_t>(n) - b.max_tokens;
  return 0;
}

// `p`'s quality and fallback share for a prompt of `n` tokens (AtPromptLength).
void PriceAt(OperatingPoint& p, int n) {
  struct Nearest {
    int64_t distance;
    double quality, fallback;
  };
  std::map<std::string, Nearest> by_kind;
  for (const QualityBand& b : p.bands) {
    const Nearest here{Distance(b, n), b.quality, b.fallback};
    auto [it, fresh] = by_kind.emplace(b.kind, here);
    Nearest& c = it->second;
    if (!fresh && here.distance < c.distance) {
      c = here;
    } else if (!fresh && here.distance == c.distance) {
      c.quality = std::min(c.quality, here.quality);
      c.fallback = std::max(c.fallback, here.fallback);
    }
  }
  p.quality = 1;
  p.fallback_share = 0;
  for (const auto& [kind, c] : by_kind) {
    p.quality = std::min(p.quality, c.quality);
    p.fallback_share = std::max(p.fallback_share, c.fallback);
  }
}

// A cache-sending point's spec is a plan, and not a progressive one.
absl::Status CheckSpec(const OperatingPoint& p, const std::string& where) {
  if (!pipeline::SendsCache(p.mode)) return absl::OkStatus();
  auto plan = codec::ParsePlan(p.spec);
  if (!plan.ok())
    return absl::InvalidArgumentError(absl::StrCat(where, ": spec: ", plan.status().message()));
  if (plan->tiers > 0) {  // the controller re-plans a layer at a time instead
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": spec: progressive plans (tiers=", plan->tiers,
                     ") are a request's choice, not an operating point for the controller"));
  }
  return absl::OkStatus();
}

// A row's point: its mode, quality, selector, retention and spec, each checked.
absl::StatusOr<OperatingPoint> ParsePoint(const nlohmann::json& e, const std::string& where) {
  // "quality", or "f1" as `kvstream eval --json` writes it.
  const char* qkey = e.is_object() && e.contains("quality") ? "quality" : "f1";
  if (!e.is_object() || !e.contains("mode") || !e["mode"].is_string() || !e.contains(qkey) ||
      !e[qkey].is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": expected {\"mode\", \"quality\" or \"f1\", ...}"));
  }
  for (const char* key : {"selector", "spec"}) {
    if (e.contains(key) && !e[key].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", key, " must be a string, found ", e[key].type_name()));
    }
  }
  if (e.contains("retention") && !e["retention"].is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": retention must be a number, found ", e["retention"].type_name()));
  }
  OperatingPoint p;
  const absl::StatusOr<Mode> mode =
      pipeline::ParseMode(e["mode"].get<std::string>(), /*allow_adaptive=*/false);
  if (!mode.ok())
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", mode.status().message()));
  p.mode = *mode;
  p.quality = e[qkey];
  if (!(p.quality >= 0 && p.quality <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": ", qkey, " must be in [0, 1] (an F1 or its share), found ", p.quality));
  }
  if (e.contains("selector")) {
    auto sel = select::ParsePolicy(e["selector"].get<std::string>());
    if (!sel.ok())
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", sel.status().message()));
    p.selector = *sel;
  }
  p.retention = e.value("retention", 1.0);
  if (!(p.retention > 0 && p.retention <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": retention must be in (0, 1], found ", p.retention));
  }
  p.spec = e.value("spec", std::string("raw"));
  RETURN_IF_ERROR(CheckSpec(p, where));
  return p;
}

// A row's measurement: its kind, length range and fallback share beside its quality.
absl::StatusOr<QualityBand> ParseBand(const nlohmann::json& e, const std::string& where,
                                      double quality) {
  if (e.contains("kind") && !(e["kind"].is_string() && !e["kind"].get<std::string>().empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": kind must be a non-empty string (the task kind measured)"));
  }
  QualityBand band;
  band.kind = e.value("kind", std::string());
  band.quality = quality;
  RETURN_IF_ERROR(ParseTokenRange(e, where, band));
  RETURN_IF_ERROR(ParseFallback(e, where, band));
  return band;
}

}  // namespace

absl::StatusOr<std::vector<OperatingPoint>> ParseQualityTable(const std::string& json,
                                                              const std::string& source) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected a JSON array of operating points"));
  }
  std::vector<OperatingPoint> out;
  std::optional<double> gate;
  std::string scout;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string where = absl::StrCat(source, "[", i, "]");
    ASSIGN_OR_RETURN(OperatingPoint p, ParsePoint(j[i], where));
    RETURN_IF_ERROR(ParseGate(j[i], where, p));
    RETURN_IF_ERROR(CheckOneGate(p, where, gate));
    RETURN_IF_ERROR(ParseScout(j[i], where, p, scout));
    ASSIGN_OR_RETURN(const QualityBand band, ParseBand(j[i], where, p.quality));
    p.fallback_share = band.fallback;
    p.bands = {band};
    MergeConservatively(p, out);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": no operating points"));
  return out;
}

std::optional<double> MeasuredKvGate(const std::vector<OperatingPoint>& points) {
  for (const OperatingPoint& p : points) {
    if (p.mode == kvstream::v1::MODE_KV && p.kv_min_confidence >= 0) return p.kv_min_confidence;
  }
  return std::nullopt;
}

std::optional<std::string> MeasuredScout(const std::vector<OperatingPoint>& points) {
  for (const OperatingPoint& p : points) {
    if (!p.scout.empty()) return p.scout;
  }
  return std::nullopt;
}

std::vector<OperatingPoint> AtPromptLength(const std::vector<OperatingPoint>& points,
                                           int prompt_tokens) {
  std::vector<OperatingPoint> out = points;
  for (OperatingPoint& p : out) {
    if (!p.bands.empty()) PriceAt(p, prompt_tokens);
  }
  return out;
}

absl::StatusOr<std::vector<OperatingPoint>> LoadQualityTable(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read quality table ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseQualityTable(ss.str(), path);
}

}  // namespace kvstream::control
