// Connection option checks, deadlines and error reporting (no server needed).
#include <gtest/gtest.h>

#include <chrono>

#include "absl/strings/match.h"
#include "cbtctl/connection.h"
#include "cbtctl/errors.h"

namespace cbt::cbtctl {
namespace {

TEST(ConnectionTest, ValidOptionCombinations) {
  GlobalOptions options;
  EXPECT_TRUE(ValidateConnectionOptions(options).ok());
  options.address = "node:7443";
  EXPECT_TRUE(ValidateConnectionOptions(options).ok());
  options.tls_ca = "ca.pem";
  options.tls_cert = "c.pem";
  options.tls_key = "k.pem";
  EXPECT_TRUE(ValidateConnectionOptions(options).ok());
  GlobalOptions insecure;
  insecure.address = "127.0.0.1:7443";
  insecure.insecure = true;
  EXPECT_TRUE(ValidateConnectionOptions(insecure).ok());
}

TEST(ConnectionTest, InvalidOptionCombinations) {
  GlobalOptions cert_only;
  cert_only.address = "node:7443";
  cert_only.tls_cert = "c.pem";
  EXPECT_TRUE(absl::StrContains(ValidateConnectionOptions(cert_only).message(), "go together"));

  GlobalOptions mixed;
  mixed.address = "node:7443";
  mixed.insecure = true;
  mixed.tls_ca = "ca.pem";
  EXPECT_TRUE(absl::StrContains(ValidateConnectionOptions(mixed).message(), "--insecure"));

  GlobalOptions unix_tls;
  unix_tls.tls_ca = "ca.pem";
  EXPECT_TRUE(absl::StrContains(ValidateConnectionOptions(unix_tls).message(), "unix"));
}

TEST(ConnectionTest, MissingTlsFileIsALocalError) {
  GlobalOptions options;
  options.address = "node:7443";
  options.tls_ca = "/nonexistent/ca.pem";
  auto channel = Connect(options);
  ASSERT_FALSE(channel.ok());
  EXPECT_EQ(channel.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(channel.status().message(), "/nonexistent/ca.pem"));
}

TEST(ConnectionTest, Deadlines) {
  using std::chrono::system_clock;
  GlobalOptions options;
  grpc::ClientContext unary;
  SetDeadline(&unary, options, false);
  const auto left = unary.deadline() - system_clock::now();
  EXPECT_GT(left, std::chrono::seconds(29));
  EXPECT_LE(left, std::chrono::seconds(30));

  grpc::ClientContext stream;
  SetDeadline(&stream, options, true);
  EXPECT_GT(stream.deadline(), system_clock::now() + std::chrono::hours(24 * 365));

  options.timeout_seconds = 2;
  grpc::ClientContext given;
  SetDeadline(&given, options, true);
  EXPECT_LE(given.deadline() - system_clock::now(), std::chrono::seconds(2));

  options.timeout_seconds = 0;
  grpc::ClientContext none;
  SetDeadline(&none, options, false);
  EXPECT_GT(none.deadline(), system_clock::now() + std::chrono::hours(24 * 365));
}

TEST(ErrorsTest, CodeNames) {
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::FAILED_PRECONDITION), "FAILED_PRECONDITION");
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAVAILABLE), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(99)), "CODE_99");
}

TEST(ErrorsTest, RpcErrorLines) {
  const grpc::Status status(grpc::StatusCode::NOT_FOUND, "/dev/sdz is not tracked");
  EXPECT_EQ(FormatRpcError("GetTracker", status, false),
            "cbtctl: GetTracker: NOT_FOUND: /dev/sdz is not tracked\n");
  const grpc::Status changed(grpc::StatusCode::FAILED_PRECONDITION, "generation changed");
  EXPECT_EQ(FormatRpcError("GetChangedExtents", changed, true),
            "cbtctl: GetChangedExtents: FAILED_PRECONDITION: generation changed\n"
            "full backup required: the CBT generation changed since the base backup\n");
}

TEST(ErrorsTest, UsageErrorPointsAtHelp) {
  ParseResult parsed = ParseCommandLine({"cbt", "extents", "/dev/sdb"});
  ASSERT_TRUE(parsed.error.ok());
  const std::string text =
      FormatUsageError(absl::InvalidArgumentError("needs --base-generation"), parsed.invocation);
  EXPECT_EQ(text,
            "cbtctl: needs --base-generation\n"
            "Usage: cbtctl [OPTIONS] cbt extents DEVICE --base-generation G --base-changes K "
            "[--start N] [--max N]\n"
            "Run 'cbtctl cbt extents --help' for details.\n");
  EXPECT_TRUE(absl::StrContains(
      FormatUsageError(absl::InvalidArgumentError("x"), Invocation{}), "cbtctl --help"));
}

}  // namespace
}  // namespace cbt::cbtctl
