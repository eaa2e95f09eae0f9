#include "cbtctl/command_line.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "cbtctl/commands.h"

namespace cbt::cbtctl {
namespace {

ParseResult Parse(std::vector<std::string> argv) { return ParseCommandLine(argv); }

Invocation ParseOk(std::vector<std::string> argv) {
  ParseResult result = Parse(argv);
  EXPECT_TRUE(result.error.ok()) << result.error;
  return result.invocation;
}

// The usage error message of a command line that must fail.
std::string ParseError(std::vector<std::string> argv) {
  ParseResult result = Parse(argv);
  EXPECT_FALSE(result.error.ok());
  EXPECT_EQ(result.error.code(), absl::StatusCode::kInvalidArgument);
  return std::string(result.error.message());
}

TEST(CommandLineTest, Defaults) {
  Invocation invocation = ParseOk({"trackers"});
  ASSERT_NE(invocation.command, nullptr);
  EXPECT_EQ(invocation.command->name, "trackers");
  EXPECT_EQ(invocation.global.address, "unix:/run/cbt-agent/agent.sock");
  EXPECT_FALSE(invocation.global.json);
  EXPECT_FALSE(invocation.global.insecure);
  EXPECT_FALSE(invocation.global.timeout_seconds.has_value());
  EXPECT_FALSE(invocation.help);
  EXPECT_TRUE(invocation.args.empty());
}

TEST(CommandLineTest, GlobalOptionsBeforeAndAfterTheCommand) {
  Invocation before = ParseOk({"--address", "node1:7443", "--json", "--timeout=2.5", "tracker",
                               "/dev/sdb"});
  Invocation after = ParseOk({"tracker", "/dev/sdb", "--address=node1:7443", "--json",
                              "--timeout", "2.5"});
  for (const Invocation& invocation : {before, after}) {
    EXPECT_EQ(invocation.command->name, "tracker");
    EXPECT_EQ(invocation.global.address, "node1:7443");
    EXPECT_TRUE(invocation.global.json);
    EXPECT_DOUBLE_EQ(invocation.global.timeout_seconds.value_or(-1), 2.5);
    EXPECT_EQ(invocation.args, std::vector<std::string>{"/dev/sdb"});
  }
}

TEST(CommandLineTest, TlsOptionsWithUnderscoresOrDashes) {
  Invocation invocation = ParseOk({"--tls_ca", "ca.pem", "--tls-cert=c.pem", "--tls_key", "k.pem",
                                   "--tls_server_name", "agent", "capabilities"});
  EXPECT_EQ(invocation.global.tls_ca, "ca.pem");
  EXPECT_EQ(invocation.global.tls_cert, "c.pem");
  EXPECT_EQ(invocation.global.tls_key, "k.pem");
  EXPECT_EQ(invocation.global.tls_server_name, "agent");
  EXPECT_TRUE(ParseOk({"--insecure", "capabilities"}).global.insecure);
  EXPECT_FALSE(ParseOk({"--insecure=false", "capabilities"}).global.insecure);
}

TEST(CommandLineTest, TwoWordCommands) {
  for (const char* name : {"snapshot create", "snapshot release", "snapshot get", "cbt info",
                           "cbt map", "cbt dirty", "cbt extents"}) {
    std::string text(name);
    const size_t space = text.find(' ');
    ParseResult result = Parse({text.substr(0, space), text.substr(space + 1), "--help"});
    EXPECT_TRUE(result.error.ok()) << name << ": " << result.error;
    ASSERT_NE(result.invocation.command, nullptr) << name;
    EXPECT_EQ(result.invocation.command->name, name);
    EXPECT_TRUE(result.invocation.help);
  }
}

TEST(CommandLineTest, EveryCommandHasAHandlerNameAndHelp) {
  for (const CommandSpec& command : Commands()) {
    EXPECT_FALSE(command.summary.empty()) << command.name;
    if (command.name != "help") {
      EXPECT_NE(FindHandler(command.name), nullptr) << command.name;
    }
    const std::string help = CommandHelp(command);
    EXPECT_TRUE(absl::StrContains(help, "Usage: cbtctl [OPTIONS] " + command.name)) << help;
    for (const std::string& option : command.options) {
      EXPECT_TRUE(absl::StrContains(help, "--" + option)) << command.name << " " << option;
    }
    EXPECT_TRUE(absl::StrContains(GeneralHelp(), "  " + command.name + " ")) << command.name;
  }
}

TEST(CommandLineTest, SnapshotCreateOptionsAnywhere) {
  Invocation invocation = ParseOk({"--limit", "1G", "snapshot", "create", "/dev/sdb",
                                   "--diff-storage=/var/tmp", "/dev/sdc"});
  EXPECT_EQ(invocation.command->name, "snapshot create");
  EXPECT_EQ(invocation.options.at("limit"), "1G");
  EXPECT_EQ(invocation.options.at("diff-storage"), "/var/tmp");
  EXPECT_EQ(invocation.args, (std::vector<std::string>{"/dev/sdb", "/dev/sdc"}));
  // '_' works as well as '-'.
  EXPECT_EQ(ParseOk({"snapshot", "create", "--diff_storage", "/d", "--limit", "1M", "/dev/sdb"})
                .options.at("diff-storage"),
            "/d");
}

TEST(CommandLineTest, DoubleDashEndsOptions) {
  Invocation invocation = ParseOk({"echo", "--", "--json", "-x"});
  EXPECT_FALSE(invocation.global.json);
  EXPECT_EQ(invocation.args, (std::vector<std::string>{"--json", "-x"}));
}

TEST(CommandLineTest, Help) {
  Invocation general = ParseOk({"--help"});
  EXPECT_TRUE(general.help);
  EXPECT_EQ(general.command, nullptr);
  EXPECT_TRUE(ParseOk({"-h"}).help);
  EXPECT_EQ(ParseOk({"help"}).command, nullptr);
  EXPECT_TRUE(ParseOk({"help"}).help);

  Invocation command = ParseOk({"help", "cbt", "extents"});
  EXPECT_TRUE(command.help);
  ASSERT_NE(command.command, nullptr);
  EXPECT_EQ(command.command->name, "cbt extents");

  Invocation group = ParseOk({"snapshot", "--help"});
  EXPECT_TRUE(group.help);
  EXPECT_EQ(group.command, nullptr);
  EXPECT_EQ(group.group, "snapshot");
  EXPECT_TRUE(absl::StrContains(GroupHelp("snapshot"), "snapshot release"));
  EXPECT_FALSE(absl::StrContains(GroupHelp("snapshot"), "cbt map"));

  // --help skips argument checks.
  Invocation no_args = ParseOk({"attach", "--help"});
  EXPECT_TRUE(no_args.help);
  EXPECT_EQ(no_args.command->name, "attach");
}

TEST(CommandLineTest, UsageErrors) {
  EXPECT_TRUE(absl::StrContains(ParseError({}), "no command"));
  EXPECT_TRUE(absl::StrContains(ParseError({"frobnicate"}), "unknown command 'frobnicate'"));
  EXPECT_TRUE(absl::StrContains(ParseError({"snapshot"}), "needs a subcommand"));
  EXPECT_TRUE(absl::StrContains(ParseError({"snapshot", "delete", "x"}),
                                "unknown command 'snapshot delete'"));
  EXPECT_TRUE(absl::StrContains(ParseError({"--bogus", "trackers"}), "unknown option '--bogus'"));
  EXPECT_TRUE(absl::StrContains(ParseError({"-x", "trackers"}), "unknown option '-x'"));
  EXPECT_TRUE(absl::StrContains(ParseError({"trackers", "--address"}), "--address needs a value"));
  EXPECT_TRUE(absl::StrContains(ParseError({"--json=maybe", "trackers"}), "--json"));
  EXPECT_TRUE(absl::StrContains(ParseError({"--timeout", "soon", "trackers"}), "--timeout"));
  EXPECT_TRUE(absl::StrContains(ParseError({"--timeout=-1", "trackers"}), "--timeout"));
  EXPECT_TRUE(absl::StrContains(ParseError({"--address=", "trackers"}), "--address"));
  EXPECT_TRUE(absl::StrContains(ParseError({"help", "nothing"}), "unknown command"));
}

TEST(CommandLineTest, ArgumentCounts) {
  EXPECT_TRUE(absl::StrContains(ParseError({"attach"}), "'attach' needs DEVICE"));
  EXPECT_TRUE(absl::StrContains(ParseError({"attach", "/dev/a", "/dev/b"}),
                                "unexpected argument '/dev/b'"));
  EXPECT_TRUE(absl::StrContains(ParseError({"trackers", "x"}), "unexpected argument 'x'"));
  EXPECT_TRUE(absl::StrContains(ParseError({"snapshot", "create", "--limit", "1M"}), "needs"));
  EXPECT_TRUE(absl::StrContains(ParseError({"cbt", "dirty", "/dev/sdb"}), "OFFSET:LENGTH"));
  EXPECT_TRUE(absl::StrContains(ParseError({"watch", "a", "b"}), "unexpected argument 'b'"));
  EXPECT_TRUE(absl::StrContains(ParseError({"health", "a", "b"}), "unexpected argument 'b'"));
  ParseOk({"watch"});
  ParseOk({"health"});
  ParseOk({"echo"});
  ParseOk({"echo", "a", "b", "c"});
}

TEST(CommandLineTest, CommandOptionsOnlyWhereTheyBelong) {
  EXPECT_TRUE(absl::StrContains(ParseError({"trackers", "--limit", "1G"}),
                                "'trackers' does not take --limit"));
  EXPECT_TRUE(absl::StrContains(ParseError({"cbt", "map", "/dev/sdb", "--max", "3"}),
                                "'cbt map' does not take --max"));
}

TEST(CommandLineTest, ErrorsStillNameTheCommandForTheUsageHint) {
  ParseResult result = Parse({"cbt", "map", "/dev/sdb", "--offset"});
  EXPECT_FALSE(result.error.ok());
  ASSERT_NE(result.invocation.command, nullptr);
  EXPECT_EQ(result.invocation.command->name, "cbt map");
  EXPECT_EQ(Parse({"snapshot"}).invocation.group, "snapshot");
}

}  // namespace
}  // namespace cbt::cbtctl
