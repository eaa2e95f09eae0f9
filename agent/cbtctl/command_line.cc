#include "cbtctl/command_line.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cbt::cbtctl {
namespace {

std::string Canonical(std::string name) {
  std::replace(name.begin(), name.end(), '_', '-');
  return name;
}

const OptionSpec* FindOption(const std::vector<OptionSpec>& specs, const std::string& name) {
  for (const OptionSpec& spec : specs) {
    if (Canonical(spec.name) == name) return &spec;
  }
  return nullptr;
}

absl::Status Usage(const std::string& message) { return absl::InvalidArgumentError(message); }

absl::Status ParseBool(const std::string& name, const std::optional<std::string>& value,
                       bool* out) {
  if (!value || *value == "true" || *value == "1") {
    *out = true;
  } else if (*value == "false" || *value == "0") {
    *out = false;
  } else {
    return Usage(absl::StrCat("--", name, " takes no value (or =true/=false)"));
  }
  return absl::OkStatus();
}

absl::Status ApplyGlobal(const std::string& name, const std::optional<std::string>& value,
                         GlobalOptions* global, bool* help) {
  if (name == "help") return ParseBool(name, value, help);
  if (name == "json") return ParseBool(name, value, &global->json);
  if (name == "insecure") return ParseBool(name, value, &global->insecure);
  if (name == "address") {
    if (value->empty()) return Usage("--address must not be empty");
    global->address = *value;
  } else if (name == "tls-ca") {
    global->tls_ca = *value;
  } else if (name == "tls-cert") {
    global->tls_cert = *value;
  } else if (name == "tls-key") {
    global->tls_key = *value;
  } else if (name == "tls-server-name") {
    global->tls_server_name = *value;
  } else if (name == "token-file") {
    global->token_file = *value;
  } else if (name == "timeout") {
    double seconds = 0;
    if (!absl::SimpleAtod(*value, &seconds) || !std::isfinite(seconds) || seconds < 0 ||
        seconds > 1e9) {
      return Usage(absl::StrCat("--timeout '", *value, "': expected seconds >= 0"));
    }
    global->timeout_seconds = seconds;
  }
  return absl::OkStatus();
}

bool IsGroup(const std::string& word) {
  for (const CommandSpec& command : Commands()) {
    if (command.name.rfind(word + " ", 0) == 0) return true;
  }
  return false;
}

// Resolves the command from the leading positional words (which it removes).
absl::Status ResolveCommand(std::vector<std::string>* words, Invocation* invocation) {
  if (words->empty()) {
    if (invocation->help) return absl::OkStatus();
    return Usage("no command given");
  }
  if (words->size() >= 2) {
    if (const CommandSpec* command = FindCommand((*words)[0] + " " + (*words)[1])) {
      invocation->command = command;
      words->erase(words->begin(), words->begin() + 2);
      return absl::OkStatus();
    }
  }
  const std::string first = words->front();
  if (IsGroup(first)) {
    invocation->group = first;
    if (invocation->help && words->size() == 1) return absl::OkStatus();
    if (words->size() == 1) return Usage(absl::StrCat("'", first, "' needs a subcommand"));
    return Usage(absl::StrCat("unknown command '", first, " ", (*words)[1], "'"));
  }
  const CommandSpec* command = FindCommand(first);
  if (command == nullptr) {
    return Usage(absl::StrCat("unknown command '", first, "'"));
  }
  invocation->command = command;
  words->erase(words->begin());
  return absl::OkStatus();
}

// "cbtctl help [COMMAND...]" becomes the help of that command (or group, or everything).
absl::Status ResolveHelpTopic(std::vector<std::string>* words, Invocation* invocation) {
  invocation->command = nullptr;
  invocation->help = true;
  if (words->empty()) return absl::OkStatus();
  return ResolveCommand(words, invocation);
}

}  // namespace

ParseResult ParseCommandLine(const std::vector<std::string>& argv) {
  ParseResult result;
  Invocation& invocation = result.invocation;
  std::vector<std::string> words;
  std::vector<std::string> given;  // command options in the order given, canonical names
  bool options_ended = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (options_ended || arg == "-" || arg.empty() || arg[0] != '-') {
      words.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_ended = true;
      continue;
    }
    if (arg == "-h") {
      invocation.help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      result.error = Usage(absl::StrCat("unknown option '", arg, "' (options start with --)"));
      break;
    }
    const size_t equals = arg.find('=');
    const std::string name = Canonical(arg.substr(2, equals == std::string::npos
                                                         ? std::string::npos
                                                         : equals - 2));
    std::optional<std::string> value;
    if (equals != std::string::npos) value = arg.substr(equals + 1);
    const OptionSpec* spec = FindOption(GlobalOptionSpecs(), name);
    const bool global = spec != nullptr;
    if (!global) spec = FindOption(CommandOptionSpecs(), name);
    if (spec == nullptr) {
      result.error = Usage(absl::StrCat("unknown option '--", name, "'"));
      break;
    }
    if (!spec->value_name.empty() && !value) {
      if (i + 1 >= argv.size()) {
        result.error = Usage(absl::StrCat("--", spec->name, " needs a value (",
                                          spec->value_name, ")"));
        break;
      }
      value = argv[++i];
    }
    if (global) {
      result.error = ApplyGlobal(name, value, &invocation.global, &invocation.help);
      if (!result.error.ok()) break;
    } else {
      invocation.options[name] = *value;
      given.push_back(name);
    }
  }

  if (!result.error.ok()) {
    ResolveCommand(&words, &invocation).IgnoreError();  // only to point at the right help
    return result;
  }

  if (!words.empty() && words.front() == "help") {
    words.erase(words.begin());
    result.error = ResolveHelpTopic(&words, &invocation);
    if (result.error.ok() && !words.empty()) {
      result.error = Usage(absl::StrCat("help: unexpected '", absl::StrJoin(words, " "), "'"));
    }
    return result;
  }
  result.error = ResolveCommand(&words, &invocation);
  if (!result.error.ok() || invocation.help) return result;

  const CommandSpec& command = *invocation.command;
  for (const std::string& name : given) {
    const auto& allowed = command.options;
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      result.error = Usage(absl::StrCat("'", command.name, "' does not take --", name));
      return result;
    }
  }
  const int count = static_cast<int>(words.size());
  if (count < command.min_args) {
    result.error = Usage(absl::StrCat("'", command.name, "' needs ", command.args));
  } else if (command.max_args >= 0 && count > command.max_args) {
    result.error = Usage(absl::StrCat("'", command.name, "': unexpected argument '",
                                      words[command.max_args], "'"));
  }
  invocation.args = std::move(words);
  return result;
}

}  // namespace cbt::cbtctl
