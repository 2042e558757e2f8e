// Prometheus metrics for the daemons: one prometheus-cpp registry per process, served as
// the Prometheus text format on GET /metrics. Families are defined where they are
// updated (edge/, cloud/); this holds the registry, the HTTP endpoint and the shared
// bucket layouts. Names follow Prometheus conventions: kvstream_ prefix, base units
// (_seconds, _bytes), _total for counters, and no per-request values in labels.
//
// The endpoint is a small HTTP/1.1 responder over prometheus-cpp's registry and text
// serializer rather than prometheus-cpp's civetweb exposer: in a process that loads
// Debian's libtorch 1.13, CivetServer fails to start ("null context when constructing
// CivetServer"; a five-line program that only links libtorch_cpu reproduces it).
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"

namespace kvstream::metrics {

class MetricsServer {
 public:
  MetricsServer();
  ~MetricsServer();  // stops the endpoint
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  prometheus::Registry& registry() { return *registry_; }
  // Serves GET /metrics on `address` ("127.0.0.1:9100", "0.0.0.0:9100"; port 0 picks a
  // free one). Empty address: metrics are kept but not served.
  absl::Status Start(const std::string& address);
  int port() const { return port_; }
  // The registry in the Prometheus text format (what /metrics returns).
  std::string Text() const;

 private:
  void ServeLoop();
  std::shared_ptr<prometheus::Registry> registry_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Bucket layouts: latencies from 0.5 ms to ~65 s (x2 steps); compression ratios 1..1024.
prometheus::Histogram::BucketBoundaries SecondsBuckets();
prometheus::Histogram::BucketBoundaries RatioBuckets();

}  // namespace kvstream::metrics
