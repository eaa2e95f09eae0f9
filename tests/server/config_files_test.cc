// The policy and token file formats, and the file-permission rules for both.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "server/auth_tokens.h"
#include "server/authz_policy.h"
#include "server/config_file.h"
#include "server/denial_log.h"

namespace cbt::agent {
namespace {

const char kToken[] = "0123456789abcdef0123456789abcdef";

TEST(AuthzPolicyTest, ParsesGrantsAndTheUnixLine) {
  auto policy = AuthzPolicy::Parse(
      "# who may do what\n"
      "grant write cert-cn:backup-controller\n"
      "  grant read   cert-san:spiffe://cluster.local/ns/b/sa/m  \n"
      "\n"
      "grant read token:reader\n"
      "grant write token:reader\n"  // the higher grant wins
      "unix read\n",
      "test");
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(policy->Granted(SubjectKind::kCertCn, "backup-controller"), Access::kWrite);
  EXPECT_EQ(policy->Granted(SubjectKind::kCertSan, "spiffe://cluster.local/ns/b/sa/m"),
            Access::kRead);
  EXPECT_EQ(policy->Granted(SubjectKind::kToken, "reader"), Access::kWrite);
  EXPECT_EQ(policy->Granted(SubjectKind::kCertCn, "reader"), Access::kNone);
  EXPECT_EQ(policy->Granted(SubjectKind::kCertSan, "backup-controller"), Access::kNone);
  EXPECT_EQ(policy->unix_access(), Access::kRead);
  EXPECT_TRUE(policy->HasCertificateGrants());
  EXPECT_EQ(policy->TokenNames(), std::vector<std::string>{"reader"});
}

TEST(AuthzPolicyTest, TheReadmeExampleParses) {
  auto policy = AuthzPolicy::Parse(
      "# --authz_policy (must not be writable by group or others)\n"
      "grant write cert-cn:backup-controller\n"
      "grant read  cert-san:spiffe://cluster.local/ns/backup/sa/reporter\n"
      "grant write token:mover          # a tokens-file name; adds to the token's own role\n"
      "unix read                        # Unix-socket callers: write (default), read or none\n",
      "README");
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ(policy->grant_count(), 3u);
  EXPECT_EQ(policy->unix_access(), Access::kRead);
}

TEST(AuthzPolicyTest, DefaultsToUnixWriteAndNothingElse) {
  auto policy = AuthzPolicy::Parse("", "test");
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ(policy->unix_access(), Access::kWrite);
  EXPECT_EQ(policy->grant_count(), 0u);
}

TEST(AuthzPolicyTest, RefusesMalformedLinesNamingTheLine) {
  for (const char* text :
       {"grant admin cert-cn:x", "grant write cn:x", "grant write cert-cn:", "grant write",
        "allow write cert-cn:x", "unix", "unix all", "unix read\nunix write", "grant none token:x",
        "grant write cert-cn:x extra"}) {
    auto policy = AuthzPolicy::Parse(std::string("# header\n") + text, "P");
    ASSERT_FALSE(policy.ok()) << text;
    EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(policy.status().message().rfind("P line ", 0), 0u) << policy.status().message();
  }
}

TEST(TokenStoreTest, ParsesTokensRolesAndExpiry) {
  auto tokens = TokenStore::Parse(std::string(kToken) + " reader read\n" +
                                      "ABCDEFGHIJKLMNOPqrstuvwxyz-._~+/== writer write "
                                      "expires=2030-01-31T12:00:00Z\n",
                                  "T");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 2u);
  const TokenEntry* reader = tokens->Find(kToken);
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->name, "reader");
  EXPECT_EQ(reader->role, Access::kRead);
  EXPECT_FALSE(reader->expires.has_value());
  const TokenEntry* writer = tokens->Find("ABCDEFGHIJKLMNOPqrstuvwxyz-._~+/==");
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(writer->role, Access::kWrite);
  ASSERT_TRUE(writer->expires.has_value());
  EXPECT_EQ(*writer->expires, absl::FromUnixSeconds(1896091200));
  EXPECT_EQ(tokens->Find(std::string(kToken).substr(1)), nullptr);
  EXPECT_EQ(tokens->Find(std::string(kToken) + "0"), nullptr);
  EXPECT_EQ(tokens->Find(""), nullptr);
  EXPECT_TRUE(tokens->HasName("writer"));
  EXPECT_FALSE(tokens->HasName("admin"));
}

TEST(TokenStoreTest, RefusesWeakMalformedAndRepeatedTokens) {
  const std::string t = kToken;
  for (const std::string& text : std::vector<std::string>{
           "short reader read", t + " reader admin", t + " reader",
           t + " reader read expires=tomorrow", t + " reader read 2030-01-01T00:00:00Z",
           t + " bad/name read", std::string("0123456789abcdef0123456789abcde\xc3\xa9 reader read"),
           t + " a read\n" + t + " b read", t + " a read\n" + t + "0 a write",
           std::string(513, 'a') + " big read", std::string("=================== pad read")}) {
    auto tokens = TokenStore::Parse(text, "T");
    EXPECT_FALSE(tokens.ok()) << text;
  }
}

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/cbt-config-test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string Write(const std::string& name, const std::string& text, mode_t mode) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string dir_;
};

TEST_F(ConfigFileTest, TokenFileMustBeHiddenFromOthers) {
  const std::string line = std::string(kToken) + " reader read\n";
  EXPECT_TRUE(TokenStore::Load(Write("t600", line, 0600)).ok());
  EXPECT_TRUE(TokenStore::Load(Write("t640", line, 0640)).ok());
  EXPECT_TRUE(TokenStore::Load(Write("t400", line, 0400)).ok());
  for (mode_t mode : {0644, 0604, 0602, 0660, 0666, 0601}) {
    auto tokens = TokenStore::Load(Write("bad", line, mode));
    ASSERT_FALSE(tokens.ok()) << std::oct << mode;
    EXPECT_NE(tokens.status().message().find("refusing to start"), std::string::npos);
  }
  EXPECT_FALSE(TokenStore::Load(dir_ + "/missing").ok());
  EXPECT_FALSE(TokenStore::Load(dir_).ok()) << "a directory";
}

TEST_F(ConfigFileTest, PolicyFileMayBeReadButNotWrittenByOthers) {
  EXPECT_TRUE(AuthzPolicy::Load(Write("p644", "unix read\n", 0644)).ok());
  EXPECT_FALSE(AuthzPolicy::Load(Write("p664", "unix read\n", 0664)).ok());
  EXPECT_FALSE(AuthzPolicy::Load(Write("p646", "unix read\n", 0646)).ok());
}

TEST(ConfigLinesTest, SkipsCommentsAndBlankLinesKeepingNumbers) {
  auto lines = SplitConfigLines("# c\n\n  a  b\t c \r\n#x\nd # comment\n   # indented\ne#f\n");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].number, 3);
  EXPECT_EQ(lines[0].fields, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(lines[1].number, 5);
  EXPECT_EQ(lines[1].fields, std::vector<std::string>{"d"});
  EXPECT_EQ(lines[2].fields, std::vector<std::string>{"e#f"}) << "'#' inside a field stays";
}

TEST(DenialLogTest, RequestTextCannotForgeLogLines) {
  EXPECT_EQ(PrintableForLog("/dev/x\ncbt-agent: info: ok"), "/dev/x\\x0acbt-agent: info: ok");
  EXPECT_EQ(PrintableForLog("a\\b\x1b[31m\xff"), "a\\\\b\\x1b[31m\\xff");
  EXPECT_EQ(PrintableForLog("/dev/sdb1"), "/dev/sdb1");
}

}  // namespace
}  // namespace cbt::agent
