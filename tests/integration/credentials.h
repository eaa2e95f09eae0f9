// Credentials for tests of the agent's TCP listeners: a CA, server and client certificates made
// with openssl, token and policy files, and channels that present them.
#ifndef CBT_TESTS_INTEGRATION_CREDENTIALS_H_
#define CBT_TESTS_INTEGRATION_CREDENTIALS_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <memory>
#include <string>

namespace cbt::testing {

std::string ReadText(const std::string& path);
// Writes `text` to `path` with exactly `mode`.
bool WriteFileWithMode(const std::string& path, const std::string& text, mode_t mode);

// Certificates under `dir`: <ca>.pem/.key for each CA, server.pem/.key (localhost, 127.0.0.1,
// signed by "ca"), <name>.pem/.key for clients. openssl's output goes to dir/openssl.log.
class TestCertificates {
 public:
  explicit TestCertificates(std::string dir) : dir_(std::move(dir)) {}
  bool MakeAuthority(const std::string& ca);
  bool MakeServer();  // signed by "ca"
  // A client certificate with subject CN `cn`, signed by `ca`; `uri_san` adds a URI SAN.
  bool MakeClient(const std::string& name, const std::string& cn, const std::string& uri_san = "",
                  const std::string& ca = "ca");

  std::string Path(const std::string& name, const char* ext) const {
    return dir_ + "/" + name + ext;
  }
  // The server's flags: --tls_cert, --tls_key, --tls_client_ca.
  std::vector<std::string> ServerFlags() const;
  // A TLS channel to `target` (localhost:port) trusting "ca"; with client certificate `client`
  // unless it is empty.
  std::shared_ptr<grpc::Channel> Channel(const std::string& target,
                                         const std::string& client = "") const;
  std::string OpensslLog() const { return ReadText(dir_ + "/openssl.log"); }

 private:
  const std::string dir_;
};

}  // namespace cbt::testing

#endif  // CBT_TESTS_INTEGRATION_CREDENTIALS_H_
