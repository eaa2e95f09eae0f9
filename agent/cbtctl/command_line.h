// The command line: global options, the command table and the parser that turns argv into an
// Invocation. Pure (no I/O), so it is unit tested.
//
// Options may appear anywhere (before or after the command words); "--" ends options.
// Option names accept '-' and '_' alike ("--tls_ca" = "--tls-ca"); values go as "--opt=V" or
// "--opt V"; boolean flags take no value (or "=true"/"=false").
#ifndef CBT_AGENT_CBTCTL_COMMAND_LINE_H_
#define CBT_AGENT_CBTCTL_COMMAND_LINE_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace cbt::cbtctl {

inline constexpr char kDefaultAddress[] = "unix:/run/cbt-agent/agent.sock";
inline constexpr double kDefaultTimeoutSeconds = 30;

struct GlobalOptions {
  std::string address = kDefaultAddress;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  std::string tls_server_name;
  // A file holding a bearer token, sent as "authorization: Bearer <token>" (TLS only).
  std::string token_file;
  bool insecure = false;
  // Unset: kDefaultTimeoutSeconds for unary calls, no deadline for streams. 0: no deadline.
  std::optional<double> timeout_seconds;
  bool json = false;
};

struct OptionSpec {
  std::string name;        // as shown in help, without dashes: "tls_ca", "diff-storage"
  std::string value_name;  // empty for boolean flags
  std::string help;
};

struct CommandSpec {
  std::string name;      // command words: "snapshot create"
  std::string args;      // argument synopsis: "--diff-storage PATH --limit SIZE DEVICE..."
  std::string summary;   // one line for the command list
  std::string details;   // more text for "--help"; may be empty
  std::vector<std::string> options;  // names of the command options it accepts
  int min_args = 0;
  int max_args = 0;      // -1: no limit
  bool streaming = false;
};

const std::vector<CommandSpec>& Commands();
const std::vector<OptionSpec>& GlobalOptionSpecs();
const std::vector<OptionSpec>& CommandOptionSpecs();
const CommandSpec* FindCommand(const std::string& name);

struct Invocation {
  GlobalOptions global;
  const CommandSpec* command = nullptr;  // null with help: the general help
  std::string group;                     // "snapshot"/"cbt" when only the group word was given
  bool help = false;                     // print help (of command, group or everything)
  std::vector<std::string> args;         // positional arguments
  std::map<std::string, std::string> options;  // command options by canonical name
};

struct ParseResult {
  Invocation invocation;  // as far as it could be parsed (command set when it was recognized)
  absl::Status error;     // InvalidArgument: a usage error
};

// argv without the program name.
ParseResult ParseCommandLine(const std::vector<std::string>& argv);

std::string GeneralHelp();
std::string GroupHelp(const std::string& group);
std::string CommandHelp(const CommandSpec& command);
std::string UsageLine(const CommandSpec& command);

}  // namespace cbt::cbtctl

#endif  // CBT_AGENT_CBTCTL_COMMAND_LINE_H_
