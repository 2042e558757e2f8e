#include "common/model/projection_header.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/status.h"

namespace kvstream::model {
namespace {

using nlohmann::json;

json ModelJson(const ProjectionModel& m) {
  return {{"fingerprint", m.fingerprint},
          {"num_layers", m.num_layers},
          {"num_kv_heads", m.num_kv_heads},
          {"head_dim", m.head_dim},
          {"rope_theta", m.rope_theta}};
}

// Typed field access that reports instead of throwing.
absl::Status Field(const json& j, const std::string& where, const char* key, double* out) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected a number"));
  }
  *out = j[key].get<double>();
  return absl::OkStatus();
}

absl::Status Field(const json& j, const std::string& where, const char* key, int* out) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number_integer() ||
      j[key].get<int64_t>() < 1 || j[key].get<int64_t>() > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, ": expected a positive integer"));
  }
  *out = j[key].get<int>();
  return absl::OkStatus();
}

absl::Status Field(const json& j, const std::string& where, const char* key, std::string* out) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": expected a string"));
  }
  *out = j[key].get<std::string>();
  return absl::OkStatus();
}

absl::Status ParseModel(const json& j, const std::string& where, ProjectionModel& m) {
  RETURN_IF_ERROR(Field(j, where, "fingerprint", &m.fingerprint));
  RETURN_IF_ERROR(Field(j, where, "num_layers", &m.num_layers));
  RETURN_IF_ERROR(Field(j, where, "num_kv_heads", &m.num_kv_heads));
  RETURN_IF_ERROR(Field(j, where, "head_dim", &m.head_dim));
  RETURN_IF_ERROR(Field(j, where, "rope_theta", &m.rope_theta));
  if (m.head_dim % 2 != 0)
    return absl::InvalidArgumentError(absl::StrCat(where, ".head_dim must be even"));
  return absl::OkStatus();
}

absl::Status ParseLayer(const json& j, int t, ProjectionLayer& layer) {
  const std::string where = absl::StrCat("layers[", t, "]");
  for (auto [key, out] : {std::pair{"ridge_k", &layer.ridge_k},
                          {"ridge_v", &layer.ridge_v},
                          {"r2_k", &layer.r2_k},
                          {"r2_v", &layer.r2_v},
                          {"cka_k", &layer.cka_k},
                          {"cka_v", &layer.cka_v}}) {
    RETURN_IF_ERROR(Field(j, where, key, out));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ProjectionHeader> ParseProjectionHeader(absl::string_view text) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::InvalidArgumentError("header is not a JSON object");
  ProjectionHeader h;
  double format = 0;
  RETURN_IF_ERROR(Field(j, "header", "format", &format));
  if (format != 1)
    return absl::InvalidArgumentError(absl::StrCat("header.format: expected 1, found ", format));
  if (!j.contains("source") || !j.contains("target")) {
    return absl::InvalidArgumentError("header: expected \"source\" and \"target\" models");
  }
  RETURN_IF_ERROR(ParseModel(j["source"], "source", h.source));
  RETURN_IF_ERROR(ParseModel(j["target"], "target", h.target));
  const json& map = j.contains("layer_map") ? j["layer_map"] : json();
  const json& layers = j.contains("layers") ? j["layers"] : json();
  if (!map.is_array() || static_cast<int>(map.size()) != h.target.num_layers ||
      !layers.is_array() || layers.size() != map.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("header: expected layer_map and layers with one entry per target layer (",
                     h.target.num_layers, ")"));
  }
  if (j.contains("joint_inputs")) {
    if (!j["joint_inputs"].is_boolean())
      return absl::InvalidArgumentError("header.joint_inputs: expected true or false");
    h.joint_inputs = j["joint_inputs"].get<bool>();
  }
  h.layers.resize(map.size());
  for (size_t t = 0; t < map.size(); ++t) {
    if (!map[t].is_array() || map[t].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer_map[", t, "]: expected a non-empty list of source layers"));
    }
    std::vector<int>& from = h.layers[t].source_layers;
    for (const json& l : map[t]) {
      if (!l.is_number_integer() || l.get<int64_t>() < 0 ||
          l.get<int64_t>() >= h.source.num_layers) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer_map[", t, "]: expected source layers 0..", h.source.num_layers - 1,
                         ", found ", l.dump()));
      }
      // Distinct layers also bound d_in (at most 2 * 2^20 layers * 2^20 heads * 2^20 dims).
      if (std::find(from.begin(), from.end(), l.get<int>()) != from.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer_map[", t, "]: source layer ", l.get<int>(), " is listed twice"));
      }
      from.push_back(l.get<int>());
    }
    RETURN_IF_ERROR(ParseLayer(layers[t], static_cast<int>(t), h.layers[t]));
  }
  if (j.contains("calibration") && j["calibration"].is_object()) {
    const json& c = j["calibration"];
    if (c.contains("prompts") && c["prompts"].is_number_integer())
      h.calibration_prompts = c["prompts"];
    if (c.contains("held_out") && c["held_out"].is_number_integer())
      h.held_out_prompts = c["held_out"];
    if (c.contains("positions") && c["positions"].is_number_integer())
      h.calibration_positions = c["positions"];
    if (c.contains("description") && c["description"].is_string()) h.calibration = c["description"];
  }
  return h;
}

std::string ProjectionHeaderJson(const ProjectionHeader& h) {
  json map = json::array(), layers = json::array();
  for (const ProjectionLayer& l : h.layers) {
    map.push_back(l.source_layers);
    layers.push_back({{"ridge_k", l.ridge_k},
                      {"ridge_v", l.ridge_v},
                      {"r2_k", l.r2_k},
                      {"r2_v", l.r2_v},
                      {"cka_k", l.cka_k},
                      {"cka_v", l.cka_v}});
  }
  const json j = {{"format", 1},
                  {"source", ModelJson(h.source)},
                  {"target", ModelJson(h.target)},
                  {"layer_map", map},
                  {"joint_inputs", h.joint_inputs},
                  {"layers", layers},
                  {"calibration",
                   {{"prompts", h.calibration_prompts},
                    {"held_out", h.held_out_prompts},
                    {"positions", h.calibration_positions},
                    {"description", h.calibration}}}};
  return j.dump();
}

int64_t ProjectionInputDim(const ProjectionHeader& h, int t) {
  return (h.joint_inputs ? 2 : 1) * static_cast<int64_t>(h.layers[t].source_layers.size()) *
         h.source.num_kv_heads * h.source.head_dim;
}

absl::StatusOr<ProjectionHeader> ReadProjectionHeader(
    absl::string_view safetensors_header, const std::map<std::string, TensorView>& tensors) {
  const json top = json::parse(safetensors_header.begin(), safetensors_header.end(), nullptr,
                               /*allow_exceptions=*/false);
  if (top.is_discarded() || !top.contains("__metadata__") ||
      !top["__metadata__"].contains(kProjectionMetadataKey) ||
      !top["__metadata__"][kProjectionMetadataKey].is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a kvstream projection (no __metadata__.", kProjectionMetadataKey, ")"));
  }
  ASSIGN_OR_RETURN(
      ProjectionHeader h,
      ParseProjectionHeader(top["__metadata__"][kProjectionMetadataKey].get<std::string>()));
  const int64_t d_out = static_cast<int64_t>(h.target.num_kv_heads) * h.target.head_dim;
  for (int t = 0; t < h.target.num_layers; ++t) {
    for (const char* kind : {"k", "v"}) {
      const std::string name = absl::StrCat("layers.", t, ".", kind);
      auto it = tensors.find(name);
      const std::vector<int64_t> want = {ProjectionInputDim(h, t) + 1, d_out};
      if (it == tensors.end())
        return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " is missing"));
      const TensorView& view = it->second;
      if (view.dtype != StDType::kF32 || view.shape != want) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor ", name, " is ", StDTypeName(view.dtype), " [", absl::StrJoin(view.shape, ", "),
            "], expected F32 [", absl::StrJoin(want, ", "), "] for the header's dims"));
      }
    }
  }
  return h;
}

}  // namespace kvstream::model
