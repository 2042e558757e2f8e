#include "common/codec/spec.h"

#include <cctype>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/base/quote.h"
#include "common/base/status.h"

namespace kvstream::codec {
namespace {

constexpr int kZstdMaxLevel = 22;

absl::StatusOr<int> ParseInt(absl::string_view text, absl::string_view what) {
  int value = 0;
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0])) ||
      !absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected a non-negative integer, found ", base::Quote(text)));
  }
  return value;
}

}  // namespace

absl::string_view DTypeName(DType d) {
  switch (d) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
  }
  return "?";
}

bool operator==(const TensorSpec& a, const TensorSpec& b) {
  return a.format == b.format && a.bits == b.bits && a.axis == b.axis &&
         a.group_size == b.group_size && a.transform == b.transform &&
         a.transform_param == b.transform_param;
}

absl::Status TensorSpec::Validate() const {
  switch (format) {
    case Format::kRaw:
    case Format::kF16:
    case Format::kBF16:
      if (bits != 0 || axis != Axis::kPerToken || group_size != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("spec: float formats take no bits/axis/group, found bits=", bits,
                         " axis=", static_cast<int>(axis), " group_size=", group_size));
      }
      break;
    case Format::kInt:
      if (bits < 1 || bits > 8) {
        return absl::InvalidArgumentError(
            absl::StrCat("spec: int bits must be 1..8, found ", bits));
      }
      if (axis == Axis::kGroup) {
        if (group_size < 1 || group_size > 4096) {
          return absl::InvalidArgumentError(
              absl::StrCat("spec: group size must be 1..4096, found ", group_size));
        }
      } else if (axis == Axis::kPerToken || axis == Axis::kPerChannel) {
        if (group_size != 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("spec: group size is only for the group axis, found ", group_size));
        }
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("spec: unknown axis ", static_cast<int>(axis)));
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("spec: unknown format ", static_cast<int>(format)));
  }
  if (transform != Transform::kNone && format == Format::kRaw) {
    return absl::InvalidArgumentError(
        "spec: a transform needs a float16 or int format to carry its output, found raw");
  }
  switch (transform) {
    case Transform::kNone:
    case Transform::kSeqDelta:
      if (transform_param != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("spec: transform takes no parameter, found ", transform_param));
      }
      break;
    case Transform::kAnchorDelta:
      if (transform_param < 2 || transform_param > 1 << 20) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec: anchor-delta group must be 2..1048576 tokens, found ", transform_param));
      }
      break;
    case Transform::kSvd:
      if (transform_param < 1 || transform_param > 4096) {
        return absl::InvalidArgumentError(
            absl::StrCat("spec: svd rank must be 1..4096, found ", transform_param));
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("spec: unknown transform ", static_cast<int>(transform)));
  }
  return absl::OkStatus();
}

std::string TensorSpec::ToString() const {
  std::string out;
  switch (format) {
    case Format::kRaw:
      out = "raw";
      break;
    case Format::kF16:
      out = "f16";
      break;
    case Format::kBF16:
      out = "bf16";
      break;
    case Format::kInt:
      out = absl::StrCat("int", bits);
      if (axis == Axis::kPerChannel) absl::StrAppend(&out, "/ch");
      if (axis == Axis::kGroup) absl::StrAppend(&out, "/g", group_size);
      break;
  }
  switch (transform) {
    case Transform::kNone:
      break;
    case Transform::kAnchorDelta:
      absl::StrAppend(&out, "+ad", transform_param);
      break;
    case Transform::kSeqDelta:
      absl::StrAppend(&out, "+sd");
      break;
    case Transform::kSvd:
      absl::StrAppend(&out, "+svd", transform_param);
      break;
  }
  return out;
}

absl::StatusOr<TensorSpec> ParseTensorSpec(absl::string_view text) {
  TensorSpec spec;
  absl::string_view rest = text;
  absl::string_view transform_text;
  if (size_t plus = rest.find('+'); plus != absl::string_view::npos) {
    transform_text = rest.substr(plus + 1);
    rest = rest.substr(0, plus);
  }
  absl::string_view axis_text;
  bool has_axis = false;
  if (size_t slash = rest.find('/'); slash != absl::string_view::npos) {
    axis_text = rest.substr(slash + 1);
    rest = rest.substr(0, slash);
    has_axis = true;
  }
  if (rest == "raw") {
    spec.format = Format::kRaw;
  } else if (rest == "f16") {
    spec.format = Format::kF16;
  } else if (rest == "bf16") {
    spec.format = Format::kBF16;
  } else if (absl::ConsumePrefix(&rest, "int")) {
    spec.format = Format::kInt;
    ASSIGN_OR_RETURN(spec.bits, ParseInt(rest, "int bits"));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a format (raw, f16, bf16, int1..int8), found ", base::Quote(rest)));
  }
  if (has_axis) {
    if (spec.format != Format::kInt) {
      return absl::InvalidArgumentError(
          absl::StrCat("an axis only applies to int formats, found /", base::Quote(axis_text)));
    }
    if (axis_text == "tok") {
      spec.axis = Axis::kPerToken;
    } else if (axis_text == "ch") {
      spec.axis = Axis::kPerChannel;
    } else if (absl::string_view g = axis_text; absl::ConsumePrefix(&g, "g")) {
      spec.axis = Axis::kGroup;
      ASSIGN_OR_RETURN(spec.group_size, ParseInt(g, "group size"));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("expected an axis (tok, ch, gN), found ", base::Quote(axis_text)));
    }
  }
  if (!transform_text.empty()) {
    absl::string_view t = transform_text;
    if (t == "sd") {
      spec.transform = Transform::kSeqDelta;
    } else if (absl::ConsumePrefix(&t, "svd")) {
      spec.transform = Transform::kSvd;
      ASSIGN_OR_RETURN(spec.transform_param, ParseInt(t, "svd rank"));
    } else if (absl::ConsumePrefix(&t, "ad")) {
      spec.transform = Transform::kAnchorDelta;
      ASSIGN_OR_RETURN(spec.transform_param, ParseInt(t, "anchor-delta group"));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("expected a transform (adN, sd, svdN), found ",
                                                     base::Quote(transform_text)));
    }
  }
  RETURN_IF_ERROR(spec.Validate());
  return spec;
}

LayerSpec Plan::ForLayer(int layer) const {
  LayerSpec spec = base;
  for (const Override& o : overrides) {
    if (layer < o.first || layer > o.last) continue;
    if (o.k) spec.k = *o.k;
    if (o.v) spec.v = *o.v;
  }
  return spec;
}

absl::Status Plan::Validate(int num_layers) const {
  for (const Override& o : overrides) {
    if (o.last >= num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan: override L", o.first, "-", o.last, " names layer ", o.last,
                       " but the model has ", num_layers, " layers (0..", num_layers - 1, ")"));
    }
  }
  if (tiers != 0 && (tiers < 2 || tiers > kMaxTiers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan: tiers must be 2..", kMaxTiers, " or 0 (off), found ", tiers));
  }
  return absl::OkStatus();
}

bool Plan::lossless(int num_layers) const {
  for (int l = 0; l < num_layers; ++l) {
    LayerSpec s = ForLayer(l);
    if (!s.k.lossless() || !s.v.lossless()) return false;
  }
  return true;
}

std::string Plan::ToString() const {
  std::string out;
  if (base.k == base.v) {
    out = base.k.ToString();
  } else {
    out = absl::StrCat("k=", base.k.ToString(), ",v=", base.v.ToString());
  }
  for (const Override& o : overrides) {
    std::string range =
        o.first == o.last ? absl::StrCat("L", o.first) : absl::StrCat("L", o.first, "-", o.last);
    if (o.k && o.v && *o.k == *o.v) {
      absl::StrAppend(&out, ",", range, "=", o.k->ToString());
    } else {
      if (o.k) absl::StrAppend(&out, ",", range, ".k=", o.k->ToString());
      if (o.v) absl::StrAppend(&out, ",", range, ".v=", o.v->ToString());
    }
  }
  if (zstd_level > 0) absl::StrAppend(&out, ",zstd=", zstd_level);
  if (tiers > 0) absl::StrAppend(&out, ",tiers=", tiers);
  return out;
}

namespace {

// The plan-wide options: zstd=<level>|off, tiers=<n>|off.
absl::Status ParsePlanOption(absl::string_view key, absl::string_view value, Plan& plan) {
  int& field = key == "zstd" ? plan.zstd_level : plan.tiers;
  if (value == "off") {
    field = 0;
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(const int n, ParseInt(value, key == "zstd" ? "zstd level" : "tiers"));
  const int lo = key == "zstd" ? 1 : 2;
  const int hi = key == "zstd" ? kZstdMaxLevel : kMaxTiers;
  if (n < lo || n > hi) {
    return absl::InvalidArgumentError(absl::StrCat(
        key == "zstd" ? "zstd level" : "tiers", " must be ", lo, "..", hi, " or off, found ", n));
  }
  field = n;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Plan> ParsePlan(absl::string_view text) {
  Plan plan;
  if (text.empty()) return absl::InvalidArgumentError("plan: empty plan string");
  int index = 0;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    ++index;
    auto fail = [&](const absl::Status& s) {
      return absl::InvalidArgumentError(
          absl::StrCat("plan item ", index, " ", base::Quote(item), ": ", s.message()));
    };
    size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {  // bare spec: default for K and V
      auto spec = ParseTensorSpec(item);
      if (!spec.ok()) return fail(spec.status());
      plan.base = {*spec, *spec};
      continue;
    }
    absl::string_view key = item.substr(0, eq);
    absl::string_view value = item.substr(eq + 1);
    if (key == "zstd" || key == "tiers") {
      const absl::Status st = ParsePlanOption(key, value, plan);
      if (!st.ok()) return fail(st);
      continue;
    }
    auto spec = ParseTensorSpec(value);
    if (!spec.ok()) return fail(spec.status());
    if (key == "k") {
      plan.base.k = *spec;
    } else if (key == "v") {
      plan.base.v = *spec;
    } else if (key.size() > 1 && key[0] == 'L') {
      absl::string_view range = key.substr(1);
      absl::string_view kind;
      if (size_t dot = range.find('.'); dot != absl::string_view::npos) {
        kind = range.substr(dot + 1);
        range = range.substr(0, dot);
        if (kind != "k" && kind != "v") {
          return fail(absl::InvalidArgumentError(absl::StrCat(
              "expected '.k' or '.v' after the layer range, found .", base::Quote(kind))));
        }
      }
      Plan::Override o;
      absl::string_view first = range, last = range;
      if (size_t dash = range.find('-'); dash != absl::string_view::npos) {
        first = range.substr(0, dash);
        last = range.substr(dash + 1);
      }
      auto f = ParseInt(first, "first layer");
      if (!f.ok()) return fail(f.status());
      auto l = ParseInt(last, "last layer");
      if (!l.ok()) return fail(l.status());
      if (*l < *f) {
        return fail(absl::InvalidArgumentError(
            absl::StrCat("layer range must not be descending, found ", *f, "-", *l)));
      }
      o.first = *f;
      o.last = *l;
      if (kind != "v") o.k = *spec;
      if (kind != "k") o.v = *spec;
      plan.overrides.push_back(o);
    } else {
      return fail(absl::InvalidArgumentError(absl::StrCat(
          "expected a key (k, v, L<range>, L<range>.k, L<range>.v, zstd, tiers), found ",
          base::Quote(key))));
    }
  }
  return plan;
}

}  // namespace kvstream::codec
