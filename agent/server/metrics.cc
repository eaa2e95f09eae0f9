#include "server/metrics.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace cbt::agent {
namespace {

std::string EscapeLabel(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

std::string FormatDouble(double v) { return absl::StrCat(v); }

}  // namespace

void Metrics::RecordRpc(const std::string& method, const std::string& code, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ++rpc_counts_[{method, code}];
  Histogram& h = rpc_latency_[method];
  for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    if (seconds <= kLatencyBuckets[i]) ++h.buckets[i];
  }
  ++h.count;
  h.sum += seconds;
}

void Metrics::SetGaugeSource(std::function<std::vector<GaugeSample>()> source) {
  std::lock_guard<std::mutex> lock(mu_);
  gauge_source_ = std::move(source);
}

std::string Metrics::Render() const {
  std::function<std::vector<GaugeSample>()> source;
  std::string out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    source = gauge_source_;
    out += "# HELP cbt_agent_rpc_total gRPC calls handled, by method and status code.\n";
    out += "# TYPE cbt_agent_rpc_total counter\n";
    for (const auto& [key, count] : rpc_counts_) {
      absl::StrAppend(&out, "cbt_agent_rpc_total{method=\"", EscapeLabel(key.first),
                      "\",code=\"", EscapeLabel(key.second), "\"} ", count, "\n");
    }
    out += "# HELP cbt_agent_rpc_duration_seconds gRPC call latency, by method.\n";
    out += "# TYPE cbt_agent_rpc_duration_seconds histogram\n";
    for (const auto& [method, h] : rpc_latency_) {
      const std::string m = EscapeLabel(method);
      for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
        absl::StrAppend(&out, "cbt_agent_rpc_duration_seconds_bucket{method=\"", m, "\",le=\"",
                        FormatDouble(kLatencyBuckets[i]), "\"} ", h.buckets[i], "\n");
      }
      absl::StrAppend(&out, "cbt_agent_rpc_duration_seconds_bucket{method=\"", m,
                      "\",le=\"+Inf\"} ", h.count, "\n");
      absl::StrAppend(&out, "cbt_agent_rpc_duration_seconds_sum{method=\"", m, "\"} ",
                      FormatDouble(h.sum), "\n");
      absl::StrAppend(&out, "cbt_agent_rpc_duration_seconds_count{method=\"", m, "\"} ", h.count,
                      "\n");
    }
  }
  if (source) {
    std::string last_name;
    for (const GaugeSample& g : source()) {
      if (g.name != last_name) {
        absl::StrAppend(&out, "# HELP ", g.name, " ", g.help, "\n# TYPE ", g.name, " gauge\n");
        last_name = g.name;
      }
      out += g.name;
      if (!g.labels.empty()) {
        out += "{";
        for (size_t i = 0; i < g.labels.size(); ++i) {
          absl::StrAppend(&out, i ? "," : "", g.labels[i].first, "=\"",
                          EscapeLabel(g.labels[i].second), "\"");
        }
        out += "}";
      }
      absl::StrAppend(&out, " ", FormatDouble(g.value), "\n");
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& address, const Metrics* metrics) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen '", address, "' is not host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* results = nullptr;
  const std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints,
                           &results);
      rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen '", address, "': ", gai_strerror(rc)));
  }
  int fd = -1;
  int last_errno = 0;
  for (addrinfo* ai = results; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
      last_errno = errno;
      ::close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(results);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, " for metrics: ",
                                               std::strerror(last_errno)));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  const int bound_port = bound.ss_family == AF_INET6
                             ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                             : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer(fd, bound_port, metrics));
}

MetricsHttpServer::MetricsHttpServer(int fd, int port, const Metrics* metrics)
    : listen_fd_(fd), port_(port), metrics_(metrics), thread_([this] { Serve(); }) {}

MetricsHttpServer::~MetricsHttpServer() {
  stop_ = true;
  thread_.join();
  ::close(listen_fd_);
}

void MetricsHttpServer::Serve() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    const int connection = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    HandleConnection(connection);
    ::close(connection);
  }
}

void MetricsHttpServer::HandleConnection(int connection) {
  std::string request;
  char buffer[2048];
  // Read the request head (bounded in size and time); the body, if any, is ignored.
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 8192) {
    pollfd p{connection, POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) return;
    const ssize_t n = ::recv(connection, buffer, sizeof(buffer), 0);
    if (n <= 0) return;
    request.append(buffer, static_cast<size_t>(n));
  }
  std::string status = "200 OK";
  std::string body;
  std::string type = "text/plain; version=0.0.4; charset=utf-8";
  if (request.rfind("GET /metrics", 0) == 0) {
    body = metrics_->Render();
  } else if (request.rfind("GET / ", 0) == 0) {
    body = "cbt-agent metrics: see /metrics\n";
    type = "text/plain";
  } else {
    status = "404 Not Found";
    body = "not found\n";
    type = "text/plain";
  }
  const std::string response =
      absl::StrCat("HTTP/1.0 ", status, "\r\nContent-Type: ", type, "\r\nContent-Length: ",
                   body.size(), "\r\nConnection: close\r\n\r\n", body);
  size_t sent = 0;
  while (sent < response.size()) {
    const ssize_t n = ::send(connection, response.data() + sent, response.size() - sent,
                             MSG_NOSIGNAL);
    if (n <= 0) return;
    sent += static_cast<size_t>(n);
  }
}

}  // namespace cbt::agent
