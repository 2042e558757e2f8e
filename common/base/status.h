// Status helpers shared by every kvstream library.
//
// Errors cross module boundaries as absl::Status / absl::StatusOr<T>; they are turned
// into grpc::Status only at a service boundary. Messages say what was expected and what
// was found.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#define KVS_CONCAT_INNER_(a, b) a##b
#define KVS_CONCAT_(a, b) KVS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status kvs_status_ = (expr);       \
    if (!kvs_status_.ok()) return kvs_status_; \
  } while (0)

// ASSIGN_OR_RETURN(T x, expr): evaluates an absl::StatusOr<T>; on error returns its
// status, else moves the value into the declaration `lhs`.
#define ASSIGN_OR_RETURN(lhs, expr) \
  KVS_ASSIGN_OR_RETURN_IMPL_(KVS_CONCAT_(kvs_statusor_, __LINE__), lhs, expr)
// `lhs` is a declaration (`T x`), which parentheses would break.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define KVS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).status();   \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)

namespace kvstream {

// `status` with `prefix` (e.g. the flag or file it concerns) before its message, same code.
inline absl::Status PrefixStatus(absl::string_view prefix, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

}  // namespace kvstream
