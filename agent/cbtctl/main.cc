// cbtctl: command-line client of the cbt-agent API. See 'cbtctl --help'.
#include <iostream>
#include <string>
#include <vector>

#include "cbtctl/command_line.h"
#include "cbtctl/commands.h"
#include "cbtctl/connection.h"
#include "cbtctl/errors.h"
#include "cbtctl/interrupt.h"

namespace cbt::cbtctl {
namespace {

int PrintHelp(const Invocation& invocation) {
  if (invocation.command != nullptr && invocation.command->name != "help") {
    std::cout << CommandHelp(*invocation.command);
  } else if (!invocation.group.empty()) {
    std::cout << GroupHelp(invocation.group);
  } else {
    std::cout << GeneralHelp();
  }
  return kExitOk;
}

int Main(int argc, char** argv) {
  const ParseResult parsed = ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc));
  const Invocation& invocation = parsed.invocation;
  if (!parsed.error.ok()) {
    std::cerr << FormatUsageError(parsed.error, invocation);
    return kExitUsage;
  }
  if (invocation.help || invocation.command == nullptr || invocation.command->name == "help") {
    return PrintHelp(invocation);
  }
  if (absl::Status valid = ValidateConnectionOptions(invocation.global); !valid.ok()) {
    std::cerr << FormatUsageError(valid, invocation);
    return kExitUsage;
  }
  const CommandHandler handler = FindHandler(invocation.command->name);
  if (handler == nullptr) {
    std::cerr << "cbtctl: internal error: no handler for '" << invocation.command->name << "'\n";
    return kExitUsage;
  }
  // Before any gRPC thread exists, so that all of them leave the signals to the canceller.
  if (invocation.command->streaming) BlockInterruptSignals();
  auto channel = Connect(invocation.global);
  if (!channel.ok()) {
    std::cerr << "cbtctl: " << channel.status().message() << "\n";
    return kExitLocalError;
  }
  auto agent = ::cbtagent::v1::CbtAgent::NewStub(*channel);
  auto health = ::grpc::health::v1::Health::NewStub(*channel);
  CommandContext context{invocation, *agent, *health, std::cout, std::cerr};
  const int rc = handler(context);
  std::cout.flush();
  return rc;
}

}  // namespace
}  // namespace cbt::cbtctl

int main(int argc, char** argv) { return cbt::cbtctl::Main(argc, argv); }
