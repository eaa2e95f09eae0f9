// The authorization decision: every caller kind against read and write methods.
#include "server/authorizer.h"

#include <gtest/gtest.h>

#include "cbtagent/v1/agent.grpc.pb.h"
#include "google/protobuf/descriptor.h"

namespace cbt::agent {
namespace {

const char kReader[] = "reader0123456789abcdef";
const char kWriter[] = "writer0123456789abcdef";
const char kOld[] = "expired0123456789abcdef";
const absl::Time kNow = absl::FromUnixSeconds(1800000000);

Authorizer Make(const std::string& policy_text) {
  auto policy = AuthzPolicy::Parse(policy_text, "policy");
  EXPECT_TRUE(policy.ok()) << policy.status();
  auto tokens =
      TokenStore::Parse(std::string(kReader) + " reader read\n" + kWriter + " writer write\n" +
                            kOld + " old write expires=2020-01-01T00:00:00Z\n",
                        "tokens");
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  return Authorizer(*policy, *tokens);
}

CallerCredentials Tcp() { return {}; }
CallerCredentials Unix() {
  CallerCredentials c;
  c.unix_socket = true;
  return c;
}
CallerCredentials WithToken(CallerCredentials c, const std::string& header) {
  c.authorization.push_back(header);
  return c;
}
CallerCredentials WithCert(const std::string& cn, const std::string& san = "") {
  CallerCredentials c;
  c.cert_cns.push_back(cn);
  if (!san.empty()) c.cert_sans.push_back(san);
  return c;
}

absl::StatusCode Code(const Authorizer& a, const CallerCredentials& c, const char* method) {
  return a.Decide(c, method, kNow).status.code();
}

TEST(AuthorizerTest, EveryApiMethodHasAnAccessClass) {
  EXPECT_TRUE(Authorizer::CheckEveryMethodClassified().ok())
      << Authorizer::CheckEveryMethodClassified();
  const auto* service =
      cbtagent::v1::EchoRequest::descriptor()->file()->FindServiceByName("CbtAgent");
  ASSERT_NE(service, nullptr);
  int reads = 0, writes = 0;
  for (int i = 0; i < service->method_count(); ++i) {
    (Authorizer::Required(service->method(i)->name()) == Access::kRead ? reads : writes)++;
  }
  EXPECT_EQ(reads, 10);
  EXPECT_EQ(writes, 5);
  for (const char* write :
       {"AttachTracker", "DetachTracker", "CreateSnapshot", "ReleaseSnapshot", "MarkDirty"}) {
    EXPECT_EQ(Authorizer::Required(write), Access::kWrite) << write;
  }
  EXPECT_EQ(Authorizer::Required("NoSuchMethod"), Access::kWrite) << "unknown fails closed";
}

TEST(AuthorizerTest, UnixCallersGetWriteUnlessThePolicySaysOtherwise) {
  EXPECT_EQ(Code(Make(""), Unix(), "AttachTracker"), absl::StatusCode::kOk);
  EXPECT_EQ(Code(Make("unix read"), Unix(), "GetCbtInfo"), absl::StatusCode::kOk);
  EXPECT_EQ(Code(Make("unix read"), Unix(), "MarkDirty"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Code(Make("unix none"), Unix(), "Echo"), absl::StatusCode::kUnauthenticated);
  // A token lifts a Unix caller above the socket's grant...
  EXPECT_EQ(
      Code(Make("unix none"), WithToken(Unix(), std::string("Bearer ") + kWriter), "AttachTracker"),
      absl::StatusCode::kOk);
  // ...and a bad one is refused even where the socket alone would do.
  EXPECT_EQ(Code(Make(""), WithToken(Unix(), "Bearer nottheright0123456789"), "Echo"),
            absl::StatusCode::kUnauthenticated);
}

TEST(AuthorizerTest, TcpCallersNeedAGrant) {
  const Authorizer a = Make(
      "grant read cert-cn:auditor\ngrant write cert-san:spiffe://x/mover\n"
      "grant write token:reader-upgraded-never");
  EXPECT_EQ(Code(a, Tcp(), "Echo"), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Code(a, WithCert("auditor"), "ListTrackers"), absl::StatusCode::kOk);
  EXPECT_EQ(Code(a, WithCert("auditor"), "AttachTracker"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Code(a, WithCert("intruder"), "Echo"), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Code(a, WithCert("anyone", "spiffe://x/mover"), "CreateSnapshot"),
            absl::StatusCode::kOk);
  // The CN and the SAN are different namespaces.
  EXPECT_EQ(Code(a, WithCert("spiffe://x/mover"), "CreateSnapshot"),
            absl::StatusCode::kPermissionDenied);
}

TEST(AuthorizerTest, BearerTokens) {
  const Authorizer a = Make("grant write token:reader\n");
  const Authorizer plain = Make("");
  const std::string reader = std::string("Bearer ") + kReader;
  EXPECT_EQ(Code(plain, WithToken(Tcp(), reader), "GetCbtInfo"), absl::StatusCode::kOk);
  EXPECT_EQ(Code(plain, WithToken(Tcp(), reader), "MarkDirty"),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Code(a, WithToken(Tcp(), reader), "MarkDirty"), absl::StatusCode::kOk)
      << "a policy line adds to the token's own role";
  EXPECT_EQ(Code(plain, WithToken(Tcp(), std::string("bearer ") + kWriter), "MarkDirty"),
            absl::StatusCode::kOk)
      << "the scheme is case-insensitive";
  for (const std::string& bad :
       {std::string("Bearer"), std::string("Bearer "), std::string("Basic ") + kWriter,
        std::string("Bearer  ") + kWriter, std::string(kWriter),
        std::string("Bearer ") + kWriter + " ", std::string("Bearer ") + kWriter + "x",
        std::string("Bearer ") + kOld}) {
    const AuthzDecision d = plain.Decide(WithToken(Tcp(), bad), "Echo", kNow);
    EXPECT_EQ(d.status.code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_EQ(d.status.message().find(kWriter), std::string::npos) << "never echo a token";
  }
  CallerCredentials twice = WithToken(WithToken(Tcp(), reader), reader);
  EXPECT_EQ(Code(plain, twice, "Echo"), absl::StatusCode::kUnauthenticated);
  // Expiry is inclusive of the instant.
  const Authorizer old = Make("");
  EXPECT_EQ(old.Decide(WithToken(Tcp(), std::string("Bearer ") + kOld), "Echo",
                       absl::FromUnixSeconds(1577836799))
                .status.code(),
            absl::StatusCode::kOk);
  EXPECT_EQ(old.Decide(WithToken(Tcp(), std::string("Bearer ") + kOld), "Echo",
                       absl::FromUnixSeconds(1577836800))
                .status.code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(AuthorizerTest, DecisionsNameTheCaller) {
  const Authorizer a = Make("grant read cert-cn:auditor\n");
  AuthzDecision d = a.Decide(WithToken(WithCert("auditor"), std::string("Bearer ") + kReader),
                             "AttachTracker", kNow);
  EXPECT_EQ(d.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(d.caller, "token:reader,cert-cn:auditor");
  EXPECT_EQ(a.Decide(Tcp(), "Echo", kNow).caller, "anonymous");
  EXPECT_EQ(a.Decide(Unix(), "Echo", kNow).caller, "unix");
}

}  // namespace
}  // namespace cbt::agent
