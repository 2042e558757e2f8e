// The bandwidth-adaptive controller's pure parts: a link estimator fed by chunk acks, a
// cost model that predicts TTFT and wire bytes for an operating point, and the choice
// among operating points. No I/O and no clocks: the edge feeds measurements in, and
// tests check decisions against hand-computed cases.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/codec/spec.h"
#include "common/pipeline/mode.h"
#include "common/select/select.h"

namespace kvstream::control {

// Modes are the wire's (common/pipeline/mode.h): KV, PROJECTED, SCOUT, TEXT.
using pipeline::Mode;

// Bandwidth as the harmonic mean of the last `window` per-chunk throughputs (robust to
// one fast outlier, as in CacheGen and MPC-style ABR), RTT as the smallest recent
// ack delay minus the first chunk's transmission time.
class LinkEstimator {
 public:
  explicit LinkEstimator(int window = 8) : window_(window) {}
  // One chunk of `bytes` that took `seconds` on the link (ack-to-ack gap, or send to ack
  // for a stream's first chunk).
  void AddThroughputSample(uint64_t bytes, double seconds);
  void AddRttSample(double seconds);
  bool has_bandwidth() const { return !samples_.empty(); }
  double bandwidth_bps() const;  // bits/s; 0 without samples
  double rtt_seconds() const;    // 0 without samples

 private:
  int window_;
  std::deque<double> samples_;  // bits/s
  std::deque<double> rtts_;
};

// Adds one stream's ack-gap throughput samples: chunk i >= 1 took from the later of its
// send and the previous chunk's ack to its own ack (times in seconds on one clock; a
// negative time means "not yet"). Chunks without both acks are skipped; the first chunk,
// whose ack delay also holds a round trip, is the caller's to account for.
void AddAckGapSamples(LinkEstimator& estimator, const std::vector<uint64_t>& bytes,
                      const std::vector<double>& sent, const std::vector<double>& acked);

struct ModelShape {
  int layers = 0;
  int kv_heads = 0;
  int head_dim = 0;
};

// Prefill time against prompt length: seconds(n) = scale * (a*n + b*n^2). The
// projections and MLP cost the same per token; attention grows with the prompt, so a
// rate measured at one length misprices another. The edge fits a and b to prefills
// timed at two lengths at start-up, and Observe() moves the scale toward what
// requests actually took, so a machine that is busier now than at start-up is priced
// as it is now.
class PrefillCost {
 public:
  PrefillCost() = default;  // unknown: costs nothing
  // n / tokens_per_second (no quadratic term); unknown for a rate <= 0.
  static PrefillCost FromRate(double tokens_per_second);
  // Through two timings (0 < n1 < n2, seconds > 0). A negative quadratic term (timing
  // noise) is dropped for the linear fit through both points; a negative linear term
  // likewise for a pure quadratic.
  static absl::StatusOr<PrefillCost> Fit(int n1, double seconds1, int n2, double seconds2);
  bool known() const { return a_ > 0 || b_ > 0; }
  double Seconds(int n) const { return scale_ * (a_ * n + b_ * static_cast<double>(n) * n); }
  // Folds one observed prefill of `n` tokens into the scale: an exponentially weighted
  // mean (weight `alpha` for the new sample) of observed over modelled time, each
  // sample clamped to [0.1, 10] so one stall cannot swing the controller.
  void Observe(int n, double seconds, double alpha = 0.25);
  double linear() const { return a_; }
  double quadratic() const { return b_; }
  double scale() const { return scale_; }

 private:
  double a_ = 0, b_ = 0, scale_ = 1;
};

// Rates the cost model needs (tokens/s unless named otherwise).
struct Rates {
  PrefillCost edge_prefill;        // scout prefill at the edge
  PrefillCost edge_prefill_stats;  // the same while collecting attention statistics
                                   // (selectors other than full); unknown: as edge_prefill
  double edge_encode_bytes = 2e9;  // chunk encode, bytes of output per second
  PrefillCost cloud_prefill;       // the cloud model that answers scout / text
  double cloud_decode = 0;         // its first decode step
  double kv_decode = 0;            // the cloud's copy of the scout, first decode step
  double rebuild_bytes = 1e9;      // chunk decode + cache write at the cloud
  double projection = 0;           // cache slots the cloud maps into its model per second
  // The edge sends a whole cache (kv / projected without a selector) a layer at a time
  // during its prefill (its --layerwise): compute and transfer overlap.
  bool layerwise = false;
  // Projected requests carry the answer check (the prompt's ids; a point's fallback share
  // of answers then costs the cloud model's prefill of the prompt).
  bool answer_check = false;
  // Adaptive kv answers the scout is unsure of go to text (the edge's --kv_min_confidence):
  // a kv point's fallback share then costs the cloud model's prefill and a round trip.
  bool kv_confidence_gate = false;
};

struct LinkState {
  double bandwidth_bps = 0;  // bits/s
  double rtt_seconds = 0;
};

struct RequestShape {
  int prompt_tokens = 0;   // whole prompt
  int context_tokens = 0;  // of which context (selection applies to these)
};

// One quality-table row's measurement: a task kind (may be empty) over prompts of
// [min_tokens, max_tokens] tokens (a row that states no range covers every length).
struct QualityBand {
  std::string kind;
  int min_tokens = 0;
  int max_tokens = 0;
  double quality = 0;
  double fallback = 0;  // projected: share answered from the prompt by the answer check
};

struct OperatingPoint {
  Mode mode = kvstream::v1::MODE_KV;
  select::Policy selector = select::Policy::kFull;
  double retention = 1.0;
  std::string spec = "raw";  // kv / projected plan string
  // Expected quality (e.g. F1) from the quality table: the lowest of its rows, or, from
  // AtPromptLength, the lowest of the rows that apply at the prompt's length.
  double quality = 0;
  // The share of answers that came from the prompt's prefill instead (projected: the
  // cloud's answer check; kv: the edge's confidence gate), the highest of the rows or of
  // those AtPromptLength applies; the cost model adds it to the point's cloud time.
  double fallback_share = 0;
  std::vector<QualityBand> bands;  // every row measured for this point
  // kv: the edge's --kv_min_confidence its rows were measured with (the scout's unsure
  // answers replaced by the large model's text answers), -1 when the table does not say.
  double kv_min_confidence = -1;
  // The fingerprint of the scout the rows were measured with (model::Model::fingerprint),
  // empty when the table does not say.
  std::string scout;
  std::string label() const;
};

// The confidence gate a table's kv rows were measured with (ParseQualityTable holds every
// kv row to one value), or nullopt when they do not say.
std::optional<double> MeasuredKvGate(const std::vector<OperatingPoint>& points);
// The scout a table was measured with (ParseQualityTable holds the rows that say to one
// fingerprint), or nullopt when no row says.
std::optional<std::string> MeasuredScout(const std::vector<OperatingPoint>& points);

// `points` priced for a prompt of `prompt_tokens` tokens: for each task kind, the point's
// rows whose length range holds the prompt (the lowest quality among them), or, when none
// does, the row whose range is nearest the prompt's length; the point's quality is the
// lowest over kinds, its fallback share the highest. Rows that state no range apply at
// every length.
std::vector<OperatingPoint> AtPromptLength(const std::vector<OperatingPoint>& points,
                                           int prompt_tokens);

struct Prediction {
  double ttft_seconds = 0;
  uint64_t wire_bytes = 0;
  // The parts, for logs and tests.
  double edge_seconds = 0, transfer_seconds = 0, cloud_seconds = 0;
};

// Predicted wire bytes and TTFT of `point` for a request on a link:
//   text:  rtt + tx(ids) + cloud_prefill(prompt) + 1/cloud_decode
//   scout: edge_prefill(prompt) + rtt + tx(ids + positions) + cloud_prefill(prompt) +
//   1/cloud_decode kv:    edge_prefill(prompt) + bytes/encode + rtt + tx(chunks) + bytes/rebuild +
//   1/kv_decode projected: as kv, plus slots/projection, and the first decode step is the answering
//          model's (1/cloud_decode); with rates.answer_check, plus the prompt's ids on the
//          wire and fallback_share x cloud_prefill(prompt); kv with rates.kv_confidence_gate,
//          plus fallback_share x (rtt + cloud_prefill(prompt))
// where edge_prefill is the statistics-collecting cost when the point selects. With
// rates.layerwise, a kv / projected point without a selector overlaps the edge's work and
// the transfer as a pipeline of L equal layers:
//   max(edge + transfer / L, edge / L + transfer) + cloud.
// where kv bytes follow the codec's size formula for the kept slots (f32 source; zstd
// is not credited, so the estimate is an upper bound), and ids cost 3 bytes each.
absl::StatusOr<Prediction> Predict(const OperatingPoint& point, const RequestShape& request,
                                   const ModelShape& scout, const Rates& rates,
                                   const LinkState& link);

struct Decision {
  OperatingPoint point;
  Prediction prediction;
  std::string reason;  // one line for logs
};

// Picks, among `points`:
//   1. with a TTFT target: the highest quality whose predicted TTFT meets it (ties: the
//      lower TTFT);
//   2. otherwise, or when none meets it: the lowest predicted TTFT among points whose
//      quality is at least `quality_floor` (none: the lowest TTFT of all).
absl::StatusOr<Decision> Choose(const std::vector<OperatingPoint>& points,
                                const RequestShape& request, const ModelShape& scout,
                                const Rates& rates, const LinkState& link,
                                double ttft_target_seconds, double quality_floor);

// Mid-stream re-planning. `ladder` holds plan strings ordered from most to fewest bytes
// (e.g. raw, int8, int4, int2); the remaining `layers` of a request are sent under one
// rung. Returns the first rung at or after `current` whose bytes for those layers
// (kv_heads x slots x head_dim, per the codec formula) cross the link at `bandwidth_bps`
// within `seconds_left`; the last rung when none does. Never moves back up: a request
// that was cut down stays cut down.
absl::StatusOr<int> ReplanRung(const std::vector<std::string>& ladder, int current, int layers,
                               int slots, const ModelShape& shape, double bandwidth_bps,
                               double seconds_left);

// Quality table: JSON [{"mode": "kv" (or "projected", "scout", "text"), "selector": "q2c",
// "retention": 0.5, "spec": "int4", "quality": 0.55}, ...]; "f1" stands in for "quality", so
// `kvstream eval --json` output is a table. A row may name the task kind it was measured
// on ("kind": "needle"), the prompt lengths it was measured over ("tokens": [400, 600])
// and, for a projected point, the share its answer check answered from the prompt
// ("answered_from_prompt": 0.3); kv rows may state the confidence gate their answers went
// through ("kv_min_confidence": 0.1; all kv rows or none, one value), and any row the
// fingerprint of the scout it was measured with ("scout"; one for the table); rows for one point
// become one point whose quality is the lowest among them (AtPromptLength narrows that to the rows
// that apply at a prompt's length). `source` names the file in errors.
absl::StatusOr<std::vector<OperatingPoint>> ParseQualityTable(const std::string& json,
                                                              const std::string& source);
absl::StatusOr<std::vector<OperatingPoint>> LoadQualityTable(const std::string& path);

}  // namespace kvstream::control
