#include "credentials.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "process.h"

namespace cbt::testing {

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool WriteFileWithMode(const std::string& path, const std::string& text, mode_t mode) {
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fchmod(fd, mode) == 0;
  ::close(fd);
  return ok;
}

bool TestCertificates::MakeAuthority(const std::string& ca) {
  return RunShell("cd " + dir_ + " && exec >>openssl.log 2>&1 && " +
                  "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + ca + ".key -out " + ca +
                  ".pem -days 2 -subj /CN=" + ca) == 0;
}

bool TestCertificates::MakeServer() {
  return RunShell("cd " + dir_ +
                  " && exec >>openssl.log 2>&1 && "
                  "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
                  "-subj /CN=localhost && "
                  "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext && "
                  "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                  "-out server.pem -days 2 -extfile server.ext") == 0;
}

bool TestCertificates::MakeClient(const std::string& name, const std::string& cn,
                                  const std::string& uri_san, const std::string& ca) {
  const std::string ext = uri_san.empty() ? "" : " -extfile " + name + ".ext";
  const std::string write_ext =
      uri_san.empty() ? ""
                      : "printf 'subjectAltName=URI:" + uri_san + "\\n' > " + name + ".ext && ";
  return RunShell("cd " + dir_ + " && exec >>openssl.log 2>&1 && " +
                  "openssl req -newkey rsa:2048 -nodes -keyout " + name + ".key -out " + name +
                  ".csr -subj /CN=" + cn + " && " + write_ext + "openssl x509 -req -in " + name +
                  ".csr -CA " + ca + ".pem -CAkey " + ca + ".key -CAcreateserial -out " + name +
                  ".pem -days 2" + ext) == 0;
}

std::vector<std::string> TestCertificates::ServerFlags() const {
  return {"--tls_cert=" + Path("server", ".pem"), "--tls_key=" + Path("server", ".key"),
          "--tls_client_ca=" + Path("ca", ".pem")};
}

std::shared_ptr<grpc::Channel> TestCertificates::Channel(const std::string& target,
                                                         const std::string& client) const {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadText(Path("ca", ".pem"));
  if (!client.empty()) {
    ssl.pem_private_key = ReadText(Path(client, ".key"));
    ssl.pem_cert_chain = ReadText(Path(client, ".pem"));
  }
  return grpc::CreateChannel(target, grpc::SslCredentials(ssl));
}

}  // namespace cbt::testing
