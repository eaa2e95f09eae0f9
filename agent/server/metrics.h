// Prometheus metrics in the text exposition format, served over plain HTTP at /metrics.
//
// Debian 12 does not package prometheus-cpp, so this is a small, dependency-free exporter:
// RPC counters and latency histograms are recorded as calls finish; gauges (trackers,
// snapshots, diff storage, changed blocks) are computed at scrape time by a callback.
#ifndef CBT_AGENT_SERVER_METRICS_H_
#define CBT_AGENT_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace cbt::agent {

struct GaugeSample {
  std::string name;    // metric name, e.g. "cbt_agent_trackers"
  std::string help;
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};

class Metrics {
 public:
  static constexpr std::array<double, 14> kLatencyBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30};

  void RecordRpc(const std::string& method, const std::string& code, double seconds);
  void SetGaugeSource(std::function<std::vector<GaugeSample>()> source);
  std::string Render() const;

 private:
  struct Histogram {
    std::array<uint64_t, kLatencyBuckets.size()> buckets{};
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> rpc_counts_;  // (method, code)
  std::map<std::string, Histogram> rpc_latency_;                         // method
  std::function<std::vector<GaugeSample>()> gauge_source_;
};

// A minimal HTTP/1.0 server answering GET /metrics; one connection at a time is enough for a
// scraper. Stops (and joins its thread) on destruction.
class MetricsHttpServer {
 public:
  // `address` is "host:port", "[v6]:port" or ":port" (all interfaces).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address,
                                                                  const Metrics* metrics);
  ~MetricsHttpServer();
  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, const Metrics* metrics);
  void Serve();
  void HandleConnection(int connection);

  const int listen_fd_;
  const int port_;
  const Metrics* metrics_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace cbt::agent

#endif  // CBT_AGENT_SERVER_METRICS_H_
