// The security tests' main daemon: the blksnap emulator with devices /dev/emu-a..d (allowed)
// and /dev/other-x, /dev/other-y (outside --device_allow=/dev/emu-*); the Unix socket plus a
// mutual-TLS TCP listener on localhost with bearer tokens (reader: read, writer: write,
// old-writer: expired) and a policy (cert-cn:backup-controller write, cert-cn:auditor read,
// cert-san:<kMoverSan> write); diff storage allowed in <work>/diff and on /dev/emu-c,
// /dev/emu-d and /dev/other-y. Client certificates: controller, auditor, intruder (CN not
// granted), mover (CN data-mover, URI SAN kMoverSan).
#ifndef CBT_TESTS_INTEGRATION_SECURED_AGENT_H_
#define CBT_TESTS_INTEGRATION_SECURED_AGENT_H_

#include <memory>
#include <string>
#include <vector>

#include "agent_harness.h"
#include "credentials.h"
#include "secure_client.h"

namespace cbt::testing {

inline constexpr char kReaderToken[] = "5f0c2a9e4b7d1c3a8e6f9b2d4c7a1e3f";
inline constexpr char kWriterToken[] = "9a3e7c1f5b2d8e4a6c0f3b9d7e1a5c2f";
inline constexpr char kExpiredToken[] = "c4e8a2f6b0d3e7a1c5f9b3d7e2a6c0f4";
inline constexpr char kUnknownToken[] = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
inline constexpr char kMoverSan[] = "spiffe://cluster.local/ns/backup/sa/mover";

class SecuredAgent {
 public:
  SecuredAgent();
  // Emulator, certificates, files, daemon (with `extra_flags`); false with a message on failure.
  bool Start(const std::vector<std::string>& extra_flags, std::string* error);

  AgentHarness& harness() { return harness_; }
  const TestCertificates& certificates() const { return certificates_; }
  const std::string& target() const { return target_; }  // localhost:<port>
  std::string work_dir() const { return harness_.work_dir(); }

  Caller Anonymous() const { return Caller(certificates_.Channel(target_)); }
  Caller WithToken(const std::string& token) const {
    return Caller::Bearer(certificates_.Channel(target_), token);
  }
  Caller WithCertificate(const std::string& client) const {
    return Caller(certificates_.Channel(target_, client));
  }
  Caller Unix() { return Caller(harness_.channel()); }

 private:
  AgentHarness harness_;
  TestCertificates certificates_;
  std::string target_;
};

}  // namespace cbt::testing

#endif  // CBT_TESTS_INTEGRATION_SECURED_AGENT_H_
